"""Write files and folders so that readers see either the old version or the complete new one, never a partial."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def sibling(path: Path, role: str) -> Path:
    """A hidden, unique sibling of `path` (same filesystem, so renames onto `path` are atomic)."""
    return path.with_name(f".{path.name}.{role}-{uuid.uuid4().hex[:12]}")


@contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary sibling of `path` to write to; it replaces `path` once the block succeeds, else is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(path, "part")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary sibling and one rename."""
    with staged_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextmanager
def staged_dir(target: str | os.PathLike, *, replace: bool) -> Iterator[Path]:
    """A scratch folder beside `target` that becomes `target` once the block succeeds; removed if it fails.

    With `replace`, an existing `target` is swapped out by renames and then deleted, so the path never holds a
    half-written folder. Without it, an existing `target` wins (concurrent builders of the same cached artefact
    discard their identical copy). A killed process may leave its hidden scratch folder behind, never `target`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = sibling(target, "building")
    staging.mkdir()  # unlike tempfile.mkdtemp, honours the umask (mkdtemp's 0700 would survive the rename)
    try:
        yield staging
        if replace and target.exists():
            old = sibling(target, "old")
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old)
        else:
            try:
                staging.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
