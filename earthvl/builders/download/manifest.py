"""The record of a crawl in its folder: `fetch_manifest.json` and, while a run goes on, its journal.

The manifest maps each key to its last result: {"status", "url", "path", "sha256", "http_status", "error"}, with
"path" the file name inside the folder and "sha256" that of the file's bytes. The journal holds one JSON line
[key, entry] per result since the manifest was last saved, so that a run killed outright loses none of them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from earthvl import atomic
from earthvl.errors import EarthvlError

MANIFEST = "fetch_manifest.json"
JOURNAL = "fetch_manifest.journal"
"""One JSON line per result since the manifest was last saved: a run killed outright loses none of its results."""
MANIFEST_INTERVAL = 10.0
"""Seconds between saves of the manifest while fetching; it is also saved at the end and when interrupted."""


def read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """The results of earlier runs into `folder`: its manifest, updated by the journal of a run that was killed."""
    path, journal = folder / MANIFEST, folder / JOURNAL
    results: Any = {}
    if path.is_file():
        try:
            results = json.loads(path.read_text(encoding="utf-8"))["results"]
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise EarthvlError(f"{path} is not a fetch manifest ({err}); delete it to fetch everything again") from None
        if not isinstance(results, dict):
            raise EarthvlError(f"{path} is not a fetch manifest; delete it to fetch everything again")
    if journal.is_file():
        for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                key, entry = json.loads(line)
            except (ValueError, TypeError, RecursionError):
                continue  # the last line of a run killed while writing it
            if isinstance(key, str) and isinstance(entry, dict):
                results[key] = entry
    return results


class Manifest:
    """The manifest of a run into `folder`: the earlier results in `entries`, each new one journaled at once."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / MANIFEST
        self.entries = read_manifest(folder)
        self._save()
        self._journal_path = folder / JOURNAL
        self._journal = open(self._journal_path, "w", encoding="utf-8")
        self._saved = time.monotonic()

    def _save(self) -> None:
        atomic.write_bytes(self.path, json.dumps({"results": self.entries}, indent=1).encode("utf-8"))

    def record(self, key: str, entry: dict[str, Any]) -> None:
        """Keep `entry` as the result of `key`, in the journal at once."""
        self.entries[key] = entry
        self._journal.write(json.dumps([key, entry]) + "\n")
        self._journal.flush()

    def save_when_due(self) -> None:
        """Save the manifest if `MANIFEST_INTERVAL` has passed since the last save, and start the journal afresh."""
        if time.monotonic() - self._saved > MANIFEST_INTERVAL:
            self._save()
            self._journal.seek(0)
            self._journal.truncate()
            self._saved = time.monotonic()

    def close(self) -> None:
        """Save the manifest; the journal is no longer needed."""
        self._save()
        self._journal.close()
        self._journal_path.unlink()
