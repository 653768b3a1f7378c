"""Write files and folders so that readers see either the old version or the complete new one, never a partial."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from earthvl.errors import EarthvlError

logger = logging.getLogger(__name__)

STAGING = re.compile(r"^\.(?P<name>.+)\.building-[0-9a-f]{12}-(?P<pid>\d+)@(?P<host>.+)$")
"""A `staged_dir` scratch folder: `.<target name>.building-<random>-<pid>@<host>` of the process that made it."""


def sibling(path: Path, role: str) -> Path:
    """A hidden, unique sibling of `path` (same filesystem, so renames onto `path` are atomic)."""
    return path.with_name(f".{path.name}.{role}-{uuid.uuid4().hex[:12]}")


def check_writable(path: str | os.PathLike, what: str, *, folder: bool = False) -> Path:
    """`path`, once it is known that it can be written: a file (or with `folder`, a folder) that is not something
    else already, under a nearest existing ancestor that is a folder this process can create entries in. An
    EarthvlError naming `path` and the reason otherwise. Leaves nothing behind."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise EarthvlError(f"cannot write the {what} {path}: it {'is not' if folder else 'is'} a folder")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise EarthvlError(f"cannot write the {what} {path}: {ancestor} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".earthvl-probe-", dir=ancestor))
    except OSError as error:
        reason = f"cannot create anything in {ancestor} ({error.strerror})"
        raise EarthvlError(f"cannot write the {what} {path}: {reason}") from error
    return path


def refuse_symlink(target: Path, doing: str = "replacing") -> None:
    """An EarthvlError if `target`, a folder to be replaced (or, with `doing="writing into"`, written into), is a
    symbolic link: replacing it by renames would move the link and leave its folder behind; writing into it would
    put the output wherever the link leads."""
    if target.is_symlink():
        raise EarthvlError(
            f"{target} is a symbolic link (to {os.readlink(target)}): not {doing} it; give the folder itself or "
            "another path"
        )


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


def _running(pid: int) -> bool:
    """Whether a process `pid` exists on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Delete the scratch folders of `target` that a killed `staged_dir` left: those whose process, named in the
    folder's name, ran on this host and runs no more. Each is logged; returns them."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    host = socket.gethostname()
    for entry in target.parent.iterdir():
        match = STAGING.match(entry.name)
        if match is None or match["name"] != target.name or match["host"] != host:
            continue
        pid = int(match["pid"])
        if pid < 1 or _running(pid) or entry.is_symlink() or not entry.is_dir():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        logger.info("removed %s, left behind by process %d, which no longer runs", entry, pid)
        removed.append(entry)
    return removed


@contextmanager
def staged_dir(target: str | os.PathLike, *, replace: bool) -> Iterator[Path]:
    """A scratch folder beside `target` that becomes `target` once the block succeeds; removed if it fails.

    With `replace`, an existing `target` is swapped out by renames and then deleted, so the path never holds a
    half-written folder; a symbolic link is refused (the renames would move the link, not its folder). Without
    it, an existing `target` wins (concurrent builders of the same cached artefact discard their identical copy).
    The scratch folder's name holds this process's pid and host: a killed process may leave it behind, never
    `target`, and the next `staged_dir` of the same `target` on this host deletes it.
    """
    target = Path(target)
    if replace:
        refuse_symlink(target)
    check_writable(target, "folder", folder=True)
    clean_stale_staging(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f"{sibling(target, 'building').name}-{os.getpid()}@{socket.gethostname()}")
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
