"""`download_file`: one large file through `<dest>.part`, resuming with Range requests, md5-verified."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from earthvl.builders.download.client import content_length, content_range, host, request, stream, url_problem
from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.download.problem import Problem
from earthvl.builders.download.retry import retrying
from earthvl.errors import EarthvlError

CHUNK = 2**20


def _hash_file(path: Path, hasher: Any) -> int:
    """Feed the file at `path` to `hasher`; returns its size."""
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return size


class _Part:
    """The `.part` file of a download, with the md5 of what it holds so far (when one is to be checked)."""

    def __init__(self, path: Path, with_md5: bool) -> None:
        self.path = path
        self.md5 = hashlib.md5() if with_md5 else None
        self.size = 0
        if path.is_file():
            self.size = path.stat().st_size if self.md5 is None else _hash_file(path, self.md5)
        self.best = self.size

    def restart(self) -> None:
        self.path.write_bytes(b"")
        self.md5 = None if self.md5 is None else hashlib.md5()
        self.size = 0

    def progressed(self) -> bool:
        """Whether the part grew beyond its largest size so far."""
        grew = self.size > self.best
        self.best = max(self.best, self.size)
        return grew

    def append(self, chunk: bytes, out: Any) -> None:
        out.write(chunk)
        if self.md5 is not None:
            self.md5.update(chunk)
        self.size += len(chunk)


def _download_attempt(url: str, part: _Part, policy: FetchPolicy, bar: Any, trusted: str) -> None:
    """One request for the rest of `url` after what `part` holds; returns once the part is complete."""
    headers = {"Range": f"bytes={part.size}-"} if part.size else {}
    with request(url, policy, headers, accept=(416,) if part.size else (), trusted=[trusted]) as (response, guard):
        guard.close()  # the body may take hours: only `timeout` bounds it, and a cut one resumes
        status = response.status_code
        if status == 416:  # nothing left after the bytes we have: complete, unless the remote file is shorter
            total = content_range(response.headers.get("Content-Range"))[1]
            if total is None or total == part.size:
                return
            reason = f"the remote file has {total} bytes, fewer than the {part.size} downloaded; starting again"
            part.restart()
            raise Problem(reason, retry=True, http_status=status)
        length = content_length(response)
        if status == 206:
            start, total = content_range(response.headers.get("Content-Range"))
            if start != part.size:
                reason = f"asked for the bytes from {part.size}, got a range from {start}; starting again"
                part.restart()
                raise Problem(reason, retry=True, http_status=status)
        else:
            if part.size:  # the server ignored the Range header and sends the whole file
                part.restart()
            total = length
        end = None if length is None else part.size + length
        bar.reset(total=total)
        bar.update(part.size)
        try:
            with open(part.path, "ab") as out:

                def sink(chunk: bytes) -> None:
                    part.append(chunk, out)
                    bar.update(len(chunk))

                stream(response, guard, sink)
        except OSError as err:
            raise EarthvlError(f"cannot write {part.path}: {err}") from err
        if end is not None and part.size < end:
            raise Problem(f"connection closed {end - part.size} bytes before the end", retry=True, http_status=status)


def _file_md5(path: Path) -> str:
    hasher = hashlib.md5()
    _hash_file(path, hasher)
    return hasher.hexdigest()


def download(url: str, dest: Path, md5: str | None, policy: FetchPolicy, progress: bool, trusted: str) -> Path:
    """`download_file`, raising the `Problem` of a host that cannot be reached at all; the host `trusted` may be
    contacted whatever its address."""
    md5 = md5.lower() if md5 else None
    if dest.is_file() and (md5 is None or _file_md5(dest) == md5):
        return dest
    problem = url_problem(url)
    if problem is not None:
        raise EarthvlError(f"cannot download {dest.name}: {problem}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(dest.with_name(dest.name + ".part"), md5 is not None)
    hint = f"; run again to resume from the bytes in {part.path}"
    bar = tqdm(initial=part.size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress)
    with bar:
        retrying(url, policy, lambda: _download_attempt(url, part, policy, bar, trusted), part.progressed, hint)
    if part.md5 is not None and (actual := part.md5.hexdigest()) != md5:
        part.path.unlink()
        raise EarthvlError(
            f"{dest}: md5 {actual} does not match the expected {md5}; the download was deleted, run again to fetch it"
        )
    os.replace(part.path, dest)
    return dest


def download_file(
    url: str, dest: str | Path, *, md5: str | None = None, policy: FetchPolicy | None = None, progress: bool = True
) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming an earlier partial download, and check its md5.

    Returns at once, without a request, when `dest` exists and matches `md5` (or no md5 is given). The host of `url`
    is the caller's choice and may be anywhere; where it redirects must be public (see `FetchPolicy.allow_networks`).
    """
    try:
        return download(url, Path(dest), md5, policy or FetchPolicy(), progress, host(url))
    except Problem as problem:
        raise EarthvlError(f"{problem}: no network? Could not download {url}") from None
