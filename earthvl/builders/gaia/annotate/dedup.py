"""Step 2, de-duplicate: the same image URL (canonicalised), the same image bytes (sha256, from the polite fetcher's
manifest) and visually near-identical images (perceptual hashes, `imagehash`). Of each group of duplicates the record
with the richest article stays; every dropped record names the one it duplicates.

The images are fetched here (`fetch_all`, into the fetch cache as `<id>.<ext>`, resumable) or read from their local
paths, since both byte and visual comparisons need them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Hashable, Iterable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from earthvl.builders.download.crawler import fetch_all
from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.gaia.annotate.clean import word_count
from earthvl.builders.gaia.annotate.records import Record
from earthvl.builders.gaia.annotate.report import AnnotationReport
from earthvl.builders.gaia.images import IMAGE_EXTENSIONS
from earthvl.images import BadImage, open_image

STEP = "dedup"
IMAGES_STEP = "images"
HASH_BITS = 64
DEFAULT_MAX_DISTANCE = 6
"""Largest Hamming distance between 64-bit perceptual hashes of near-duplicates: re-encodings and rescalings of one
image stay within a few bits, different scenes differ in about half of them."""


def canonical_url(url: str) -> str:
    """`url` as one spelling of its resource: scheme and host lower-cased, default port, tracking parameters and
    fragment dropped, query parameters sorted (courlan's normalisation)."""
    from courlan import normalize_url

    try:
        normal = normalize_url(url, strict=True)
    except ValueError:
        normal = url
    parts = urlsplit(normal)
    return urlunsplit(parts._replace(fragment=""))


def richness(record: Record) -> tuple[int, int]:
    """How much a record tells: words of its cleaned article, then of its alt text."""
    return word_count(record.text), word_count(record.image_alt or "")


def drop_duplicates(
    records: list[Record], key: Callable[[Record], Hashable | None], report: AnnotationReport, kind: str, why: str
) -> list[Record]:
    """One record per `key` (None: never a duplicate), the richest, ties to the earliest; the others are dropped
    with `why` and the id of the record kept, and counted as `dropped_<kind>`."""
    keeper: dict[Hashable, Record] = {}
    for record in sorted(records, key=lambda r: tuple(-n for n in richness(r))):  # stable: ties keep input order
        value = key(record)
        if value is not None:
            keeper.setdefault(value, record)
    kept = []
    for record in records:
        value = key(record)
        first = keeper.get(value) if value is not None else None
        if first is None or first is record:
            kept.append(record)
        else:
            report.drop(STEP, record.id, why, duplicate_of=first.id)
    report.count(STEP, f"dropped_{kind}", len(records) - len(kept))
    return kept


def _local_image(record: Record) -> tuple[Path, str]:
    source = Path(record.image_src)
    if source.suffix.lower() not in IMAGE_EXTENSIONS:
        raise OSError(f"{source} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
    return source, hashlib.sha256(source.read_bytes()).hexdigest()


def fetch_images(
    records: list[Record], image_dir: Path, policy: FetchPolicy, report: AnnotationReport, progress: bool = True
) -> list[Record]:
    """Each record's image file with its sha256: URLs through the polite fetcher into `image_dir/<id>.<ext>` (its
    manifest keeps the sha256 of what earlier runs fetched), local paths where they are. Records whose image cannot
    be had are dropped with the reason."""
    image_dir.mkdir(parents=True, exist_ok=True)
    results = fetch_all(((str(r.id), r.image_src) for r in records if r.is_url), image_dir, policy, progress=progress)
    kept = []
    for record in records:
        if record.is_url:
            result = results[str(record.id)]
            if result.status in ("ok", "cached") and result.path:
                record.image_file, record.sha256 = image_dir / result.path, result.sha256
            elif result.status == "opted_out":
                report.drop(IMAGES_STEP, record.id, f"{result.url} opted out of AI use (X-Robots-Tag); not fetched")
                continue
            else:
                report.drop(IMAGES_STEP, record.id, f"fetching {result.url} failed: {result.error}")
                continue
        else:
            try:
                record.image_file, record.sha256 = _local_image(record)
            except OSError as error:
                report.drop(IMAGES_STEP, record.id, f"local image {record.image_src} cannot be read: {error}")
                continue
        kept.append(record)
    report.count(IMAGES_STEP, "fetched", sum(r.status == "ok" for r in results.values()))
    report.count(IMAGES_STEP, "cached", sum(r.status == "cached" for r in results.values()))
    report.count(IMAGES_STEP, "local", sum(not r.is_url for r in kept))
    return kept


def perceptual_hash(path: Path, max_pixels: int) -> int:
    """The 64-bit DCT perceptual hash (`imagehash.phash`) of an image file, as an integer."""
    import imagehash

    image = open_image(str(path), max_pixels=max_pixels, draft_size=(256, 256))
    return int(str(imagehash.phash(image)), 16)


def hash_images(records: Iterable[Record], report: AnnotationReport, max_pixels: int) -> dict[int | str, int]:
    """record id -> perceptual hash; undecodable or oversized images drop their record."""
    hashes: dict[int | str, int] = {}
    for record in records:
        assert record.image_file is not None
        try:
            hashes[record.id] = perceptual_hash(record.image_file, max_pixels)
        except BadImage as error:
            report.drop(IMAGES_STEP, record.id, str(error))
    return hashes


def _distances(kept: np.ndarray, value: int) -> np.ndarray:
    diff = np.bitwise_xor(kept, np.uint64(value))
    return np.unpackbits(diff.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def drop_near_duplicates(
    records: list[Record], hashes: dict[int | str, int], report: AnnotationReport, max_distance: int
) -> list[Record]:
    """Records whose image lies within `max_distance` bits of a richer record's image are dropped, naming it."""
    order = sorted(records, key=lambda r: tuple(-n for n in richness(r)))
    kept_hashes = np.zeros(len(order), dtype=np.uint64)
    kept_ids: list[int | str] = []
    duplicate_of: dict[int | str, tuple[int | str, int]] = {}
    for record in order:
        value = hashes[record.id]
        if kept_ids:
            distances = _distances(kept_hashes[: len(kept_ids)], value)
            nearest = int(np.argmin(distances))
            if distances[nearest] <= max_distance:
                duplicate_of[record.id] = (kept_ids[nearest], int(distances[nearest]))
                continue
        kept_hashes[len(kept_ids)] = value
        kept_ids.append(record.id)
    for record in records:
        if record.id in duplicate_of:
            first, distance = duplicate_of[record.id]
            reason = f"near-duplicate image (perceptual hash {distance} of {HASH_BITS} bits from the kept one)"
            report.drop(STEP, record.id, reason, duplicate_of=first)
    report.count(STEP, "dropped_near_duplicate", len(duplicate_of))
    return [record for record in records if record.id not in duplicate_of]


def deduplicate(
    records: list[Record],
    image_dir: Path,
    policy: FetchPolicy,
    report: AnnotationReport,
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    max_pixels: int,
    progress: bool = True,
) -> list[Record]:
    """The whole step: canonical URL, then images fetched, then identical bytes, then near-duplicates."""
    report.count(STEP, "in", len(records))
    url = lambda r: canonical_url(r.image_src) if r.is_url else None  # noqa: E731
    records = drop_duplicates(records, url, report, "same_url", "same image URL (canonicalised)")
    records = fetch_images(records, image_dir, policy, report, progress)
    records = drop_duplicates(records, lambda r: r.sha256, report, "same_bytes", "identical image bytes (sha256)")
    hashes = hash_images(records, report, max_pixels)
    records = [record for record in records if record.id in hashes]
    records = drop_near_duplicates(records, hashes, report, max_distance)
    report.count(STEP, "out", len(records))
    return records
