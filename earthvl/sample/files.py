"""Byte-reproducible writers: PNG, JSON, zip and tar members with fixed metadata."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from earthvl.atomic import staged_file

FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an (H, W, 3) or (H, W) uint8 array as PNG (no timestamps or other varying chunks)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class PngWriter:
    """Encodes and writes PNGs on a thread pool (zlib releases the GIL); errors surface on exit."""

    def __init__(self, workers: int | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1)
        self._pending: list[Future] = []

    def write(self, path: Path, array: np.ndarray) -> None:
        self._pending.append(self._pool.submit(lambda: write_bytes(path, png_bytes(array))))
        if len(self._pending) > 256:
            self._drain()

    def _drain(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def __enter__(self) -> "PngWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=2).encode("utf-8")


def write_zip(dest: Path, root: Path, members: list[str]) -> Path:
    """Zip `members` (paths relative to `root`) into `dest` with fixed timestamps; PNGs stored, the rest deflated."""
    with staged_file(dest) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
            archive.writestr(info, (root / name).read_bytes())
    return dest


def add_tar_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    """Add a file to a tar with fixed owner, mode and time so that the archive is byte-reproducible."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    archive.addfile(info, io.BytesIO(data))
