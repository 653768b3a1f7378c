"""`annotation_report.json`: what each step did to the records, every dropped or failed record and why, tokens, cost."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from earthvl import atomic

REPORT_FILE = "annotation_report.json"


@dataclass
class AnnotationReport:
    """Counts per step, the records each step dropped (with the record a duplicate duplicates) and notes."""

    records: str
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    flagged: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def count(self, step: str, name: str, amount: int = 1) -> None:
        """Add `amount` to the counter `name` of `step`."""
        counts = self.steps.setdefault(step, {})
        counts[name] = counts.get(name, 0) + amount

    def drop(self, step: str, record_id: Any, reason: str, **details: Any) -> None:
        """A record leaves the pipeline at `step`; `details` may name the record it duplicates (`duplicate_of`)."""
        self.dropped.append({"id": record_id, "step": step, "reason": reason, **details})
        self.count(step, "dropped")

    def flag(self, step: str, record_id: Any, reason: str) -> None:
        """A record stays, with a problem worth knowing (e.g. an empty article)."""
        self.flagged.append({"id": record_id, "step": step, "reason": reason})
        self.count(step, "flagged")

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "steps": self.steps,
            "dropped": self.dropped,
            "flagged": self.flagged,
            "usage": self.usage,
            **self.notes,
        }

    def save(self, folder: Path) -> Path:
        path = folder / REPORT_FILE
        atomic.write_bytes(path, (json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        return path
