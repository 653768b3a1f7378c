"""Scraped image-text records as the annotation pipeline reads them: JSONL, JSON, CSV, Parquet or a `datasets`
folder, one row per image, with a column mapping for other names."""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from earthvl.builders.download.crawler import key_problem
from earthvl.errors import EarthvlError
from earthvl.paths import leads_out

COLUMNS = ("id", "image_src", "image_alt", "article", "credits", "page_url", "date", "lat", "lon")
"""Input columns: `image_src` (an http(s) URL or a local path, relative to the records file) and `article` (text
or HTML) are required; the rest may be missing or null."""
TEXT_FIELDS = ("image_alt", "article", "credits", "page_url")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Record:
    """One scraped image and its article, and what the steps learn about it."""

    id: int | str
    image_src: str
    image_alt: str | None = None
    article: str = ""
    credits: str | None = None
    page_url: str | None = None
    date: str | None = None
    lat: float | None = None
    lon: float | None = None
    text: str = ""
    """The cleaned article (the summary replaces it for the annotation when the article is long)."""
    summary: str | None = None
    image_file: Path | None = None
    sha256: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    """The annotation's GAIA fields (tag, location, modalities, ...)."""

    @property
    def is_url(self) -> bool:
        return is_url(self.image_src)


def is_url(value: str) -> bool:
    return urlsplit(value).scheme.lower() in ("http", "https")


def column_mapping(pairs: Iterable[str] | None) -> dict[str, str]:
    """`["article=body", ...]` -> {"body": "article"}: input column name -> pipeline name."""
    mapping: dict[str, str] = {}
    for pair in pairs or ():
        ours, sep, theirs = pair.partition("=")
        if not sep or not theirs or ours not in COLUMNS:
            raise EarthvlError(f"column mapping {pair!r} is not OURS=THEIRS with OURS one of {', '.join(COLUMNS)}")
        mapping[theirs] = ours
    return mapping


def _rows(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        from datasets import load_from_disk

        try:
            data = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as error:
            raise EarthvlError(f"records folder {path} is not a `datasets` folder (save_to_disk): {error}") from None
        if hasattr(data, "keys"):  # a DatasetDict: every split, in order
            return [row for split in data for row in data[split]]
        return list(data)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise EarthvlError(f"records file {path}: unknown format {path.suffix!r}; use {', '.join(FORMATS)} or a folder")
    if not path.is_file():
        raise EarthvlError(f"records file {path} does not exist")
    try:
        if kind == "jsonl":
            lines = path.read_text(encoding="utf-8").splitlines()
            rows = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
            return [_object(_line(line, path, number), path, number) for number, line in rows]
        if kind == "json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise EarthvlError(f"records file {path} must hold a JSON list of records")
            return [_object(row, path, number) for number, row in enumerate(data, 1)]
        import pandas as pd

        frame = pd.read_csv(path, dtype=str, keep_default_na=False) if kind == "csv" else pd.read_parquet(path)
        return frame.to_dict("records")
    except (ValueError, UnicodeDecodeError, OSError, RecursionError) as error:
        if isinstance(error, EarthvlError):
            raise
        raise EarthvlError(f"records file {path} cannot be read: {error}") from None


def _line(line: str, path: Path, number: int) -> Any:
    try:
        return json.loads(line)
    except ValueError as error:
        raise EarthvlError(f"records file {path}, line {number}: not JSON ({error})") from None


def _object(row: Any, path: Path, number: int) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise EarthvlError(f"records file {path}, record {number}: not a JSON object")
    return row


_SURROGATE = re.compile("[\ud800-\udfff]")
"""A lone surrogate: JSON parsers let escapes such as "\\ud800" through, and no UTF-8 file can hold it."""


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value).strip() or None


def _unicode_text(name: str, value: Any, problems: list[str]) -> str | None:
    """A text field, lone surrogates replaced by U+FFFD (and noted in `problems`)."""
    text = _text(value)
    if text is not None and _SURROGATE.search(text):
        problems.append(f"{name} holds lone surrogates (not Unicode): replaced by U+FFFD")
        text = _SURROGATE.sub("\ufffd", text)
    return text


def _shown_id(value: Any) -> str:
    """A refused id as the report can hold it: at most 80 characters, lone surrogates escaped."""
    text = str(value)[:80]
    return _SURROGATE.sub(lambda match: ascii(match.group())[1:-1], text)


def _coordinate(value: Any, limit: float, name: str, problems: list[str]) -> float | None:
    if _text(value) is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isfinite(number) and abs(number) <= limit:
        return number
    problems.append(f"{name} {str(value)[:40]!r} is not a number within +-{limit:g}: ignored")
    return None


def _date(value: Any, problems: list[str]) -> str | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return datetime.datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        problems.append(f"date {text[:40]!r} is not an ISO 8601 date: ignored (the season is unknown)")
        return None


def load_records(
    path: str | Path, columns: Mapping[str, str] | None = None
) -> tuple[list[Record], list[dict[str, Any]], list[dict[str, Any]]]:
    """The records of `path`, the rows that cannot be records and the values ignored (each with the reason). Rows
    without an `id` get their 1-based position; local image paths are resolved against the records file's folder."""
    path = Path(path)
    columns = columns or {}
    base = path if path.is_dir() else path.parent
    records: list[Record] = []
    refused: list[dict[str, Any]] = []
    ignored: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw in enumerate(_rows(path), 1):
        row = {columns.get(str(name), str(name)): value for name, value in raw.items()}
        record_id = row.get("id")
        if _text(record_id) is None:
            record_id = number
        elif isinstance(record_id, float) and record_id.is_integer():
            record_id = int(record_id)
        elif not isinstance(record_id, int) or isinstance(record_id, bool):
            record_id = str(record_id).strip()
        problem = key_problem(str(record_id))
        if problem is not None:
            refused.append({"id": _shown_id(record_id), "row": number, "reason": f"id {problem}"})
            continue
        if str(record_id) in seen:
            refused.append({"id": record_id, "row": number, "reason": f"id {record_id} is given twice"})
            continue
        seen.add(str(record_id))
        problems: list[str] = []
        image_src = _unicode_text("image_src", row.get("image_src"), problems)
        if image_src is None:
            refused.append({"id": record_id, "row": number, "reason": "no image_src (an image URL or local path)"})
            continue
        if not is_url(image_src):
            image_src = str(base / image_src)
            if leads_out(image_src, base):
                refused.append({"id": record_id, "row": number, "reason": f"image_src {image_src} is not inside the "
                                f"records' folder {base} (or is a symbolic link out of it): not read"})
                continue
        lat, lon = _coordinate(row.get("lat"), 90, "lat", problems), _coordinate(row.get("lon"), 180, "lon", problems)
        if (lat is None) != (lon is None):
            problems.append("only one of lat/lon is given: both ignored")
            lat = lon = None
        date = _date(row.get("date"), problems)
        texts = {name: _unicode_text(name, row.get(name), problems) for name in TEXT_FIELDS}
        ignored += [{"id": record_id, "row": number, "reason": problem} for problem in problems]
        records.append(
            Record(
                id=record_id,
                image_src=image_src,
                image_alt=texts["image_alt"],
                article=texts["article"] or "",
                credits=texts["credits"],
                page_url=texts["page_url"],
                date=date,
                lat=lat,
                lon=lon,
            )
        )
    return records, refused, ignored
