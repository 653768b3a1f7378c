"""The files of a Zenodo record, from its REST API: listed, and downloaded resumably and md5-verified."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from earthvl.builders.download.client import content_length, host, request, stream
from earthvl.builders.download.files import download
from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.download.problem import Problem
from earthvl.builders.download.retry import retrying
from earthvl.errors import EarthvlError

ZENODO_API = "https://zenodo.org/api/records/{record}"
ZENODO_RECORD_PAGE = "https://zenodo.org/records/{record}"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a Zenodo record."""

    name: str
    url: str
    size: int | None
    md5: str | None


def _get_json(url: str, policy: FetchPolicy) -> Any:
    """The JSON answer of `url`, whose host is the caller's choice (trusted)."""

    def attempt() -> bytes:
        body = bytearray()
        with request(url, policy, {"Accept": "application/json"}, trusted=[host(url)]) as (response, guard):
            length = content_length(response)
            stream(response, guard, body.extend, limit=policy.max_bytes)
            if length is not None and len(body) != length:
                reason = f"truncated body: {len(body)} of {length} bytes"
                raise Problem(reason, retry=True, http_status=response.status_code)
        return bytes(body)

    body = retrying(url, policy, attempt)
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as err:
        raise EarthvlError(f"{url} did not answer with JSON ({type(err).__name__}: {err})") from None


def _remote_file(entry: Any, url: str) -> RemoteFile:
    """A file entry of the Zenodo API; both the legacy (`filename`) and the current (`key`) shapes are read."""
    if not isinstance(entry, dict):
        raise EarthvlError(f"{url}: unexpected file entry {entry!r}")
    name = entry.get("key") or entry.get("filename")
    links = entry.get("links") if isinstance(entry.get("links"), dict) else {}
    # In file listings `self` is the metadata and `content` the bytes; in a record's JSON `self` ends in /content.
    link = links.get("content") or links.get("download") or links.get("self")
    if not isinstance(name, str) or not isinstance(link, str):
        raise EarthvlError(f"{url}: a file entry without a name or a download link: {entry!r}")
    if PurePosixPath(name).name != name or name in (".", ".."):
        raise EarthvlError(f"{url}: refusing the file name {name!r}")
    algorithm, _, digest = str(entry.get("checksum") or "").rpartition(":")
    md5 = digest.lower() if algorithm.lower() in ("md5", "") and re.fullmatch(r"[0-9a-fA-F]{32}", digest) else None
    size = entry.get("size", entry.get("filesize"))
    return RemoteFile(name, link, int(size) if isinstance(size, (int, float)) else None, md5)


def _zenodo_files(record: str, api_url: str, policy: FetchPolicy) -> list[RemoteFile]:
    url = api_url.format(record=record)
    data = _get_json(url, policy)
    entries = data.get("files") if isinstance(data, dict) else None
    if isinstance(entries, dict):
        entries = entries.get("entries")
    if isinstance(entries, dict):
        entries = list(entries.values())
    if not isinstance(entries, list):
        raise EarthvlError(f"{url} did not answer with the file list of a Zenodo record")
    return [_remote_file(entry, url) for entry in entries]


def _unreachable(record: str, problem: Problem, dest: Path | None) -> EarthvlError:
    into = "" if dest is None else f" into {dest}"
    return EarthvlError(
        f"{problem}: no network? Download the files of {ZENODO_RECORD_PAGE.format(record=record)} by hand{into} "
        "and pass that folder as --source"
    )


def zenodo_files(record: str, *, api_url: str = ZENODO_API, policy: FetchPolicy | None = None) -> list[RemoteFile]:
    """The files of a Zenodo record (name, download URL, size, md5), from its REST API at `api_url`."""
    try:
        return _zenodo_files(record, api_url, policy or FetchPolicy())
    except Problem as problem:
        raise _unreachable(record, problem, None) from None


def download_zenodo_record(
    record: str,
    dest: str | Path,
    names: Iterable[str] | None = None,
    *,
    api_url: str = ZENODO_API,
    policy: FetchPolicy | None = None,
    progress: bool = True,
) -> list[Path]:
    """Download the files of a Zenodo record (all, or those in `names`) into the folder `dest`, md5-verified.

    Files already there and verified are not downloaded again; interrupted downloads resume.
    """
    policy = policy or FetchPolicy()
    dest = Path(dest)
    try:
        files = _zenodo_files(record, api_url, policy)
        if names is not None:
            by_name = {file.name: file for file in files}
            wanted = list(dict.fromkeys(names))
            unknown = [name for name in wanted if name not in by_name]
            if unknown:
                have = ", ".join(sorted(by_name)) or "no files"
                raise EarthvlError(f"Zenodo record {record} has no {', '.join(unknown)}; it has {have}")
            files = [by_name[name] for name in wanted]
        # Links to the API's own host are trusted like the API URL; others must lead to public addresses.
        return [download(file.url, dest / file.name, file.md5, policy, progress, host(api_url)) for file in files]
    except Problem as problem:
        raise _unreachable(record, problem, dest) from None
