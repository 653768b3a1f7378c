"""A resumable per-record cache of backend answers: one JSON line per answer or failure, keyed by a content hash.

A key is the sha256 of a key dict (content hashes of the inputs, prompt version, backend settings, sampling
settings), so any change to what decides an answer makes a new key. Lines are appended and flushed one at a time;
the last line of a key wins, and a line cut short by a crash is ignored, so a re-run asks the backend again only for
what is missing or failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from earthvl.errors import EarthvlError


def cache_key(parts: dict[str, Any]) -> str:
    """The sha256 (hex) of a JSON-able key dict, independent of key order."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def content_hash(data: bytes) -> str:
    """The sha256 (hex) of some bytes: how inputs (images, maps, prompts) enter a key dict."""
    return hashlib.sha256(data).hexdigest()


def _well_formed(entry: Any) -> bool:
    """Whether a cache line holds an entry as `ResultCache` writes it (an answer is an object, a reason a string)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        return False
    return isinstance(entry.get("answer"), dict) if entry.get("ok") is True else isinstance(entry.get("reason"), str)


class ResultCache:
    """Answers and failures by key, read from and appended to one JSONL file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._entries: dict[str, dict[str, Any]] = {}
        self.unreadable_lines = 0
        if self.path.is_file():
            with self.path.open("rb") as lines:
                for line in lines:
                    try:
                        entry = json.loads(line.decode("utf-8"))
                    except ValueError:  # cut short by a crash, or not UTF-8
                        entry = None
                    if _well_formed(entry):
                        self._entries[entry["key"]] = entry
                    else:
                        self.unreadable_lines += 1
        elif self.path.exists():
            raise EarthvlError(f"cache {self.path} is not a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored answer of a key (None if missing or failed)."""
        entry = self._entries.get(key)
        return entry["answer"] if entry and entry.get("ok") else None

    def failure(self, key: str) -> str | None:
        """The reason of a key's last failure (None if it has an answer or was never tried)."""
        entry = self._entries.get(key)
        return entry.get("reason") if entry and not entry.get("ok") else None

    def put(self, key: str, record: str, answer: dict[str, Any]) -> None:
        self._append({"key": key, "record": record, "ok": True, "answer": answer})

    def fail(self, key: str, record: str, reason: str) -> None:
        self._append({"key": key, "record": record, "ok": False, "reason": reason})

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            self._entries[entry["key"]] = entry
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ResultCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
