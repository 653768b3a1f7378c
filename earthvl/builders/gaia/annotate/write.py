"""Step 6, split and write: `spatiotemporal_split` (geohash-3 cell x season, GAIA's 70/10/20 train/validation/test)
and GAIA's `{train,val,test}_data.json` under the upstream field names, which `earthvl build gaia` builds (pixels
from `images/<id>.<ext>` beside them with `--images folder`, or fetched again from `image_src`). `images/` holds
exactly the written records' images."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from earthvl import atomic
from earthvl.builders.gaia import layout
from earthvl.builders.gaia.annotate.records import Record
from earthvl.builders.gaia.annotate.report import AnnotationReport
from earthvl.builders.stratified_splits import spatiotemporal_split
from earthvl.errors import EarthvlError

STEP = "split"
IMAGE_DIR = "images"


def gaia_record(record: Record) -> dict[str, Any]:
    """One record under GAIA's field names, in GAIA's order."""
    values = {
        "id": record.id,
        "image_src": record.image_src,
        "image_alt": record.image_alt,
        "credits": record.credits,
        "lat": record.lat,
        "lon": record.lon,
        **record.fields,
    }
    return {name: values.get(name) for name in layout.FIELDS}


def write_splits(records: list[Record], out: Path, report: AnnotationReport, seed: int = 0) -> dict[str, int]:
    """Write the three metadata JSONs into `out`; returns the records per split."""
    names = spatiotemporal_split(
        [r.lat for r in records], [r.lon for r in records], [r.date for r in records], layout.SPLIT_FRACTIONS, seed=seed
    )
    sizes = {}
    for split in layout.SPLITS:
        rows = [gaia_record(record) for record, name in zip(records, names) if name == split]
        data = json.dumps(rows, ensure_ascii=False, indent=1).encode("utf-8")
        atomic.write_bytes(out / layout.json_path(split), data)
        sizes[split] = len(rows)
    report.steps[STEP] = {**sizes, "without_coordinates": sum(r.lat is None for r in records),
                          "without_date": sum(r.date is None for r in records)}
    return sizes


def _same_file(path: Path, source: Path, sha256: str | None) -> bool:
    """Whether `path`, a regular file (not a link), already holds `source`'s bytes."""
    if path.is_symlink() or not path.is_file():
        return False
    if os.path.samefile(path, source):
        return True
    if path.stat().st_size != source.stat().st_size:
        return False
    return sha256 is not None and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def _hard_link(source: Path, link: Path) -> bool:
    """Whether `link` could be made a hard link to `source` (not across filesystems, nor on every filesystem)."""
    try:
        os.link(source, link)
    except OSError:
        return False
    return True


def _image_folder(out: Path) -> Path:
    folder = out / IMAGE_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise EarthvlError(f"{folder} is not a folder of its own (a link or a file): move it away and run again")
    folder.mkdir(exist_ok=True)
    return folder


def _refuse_folder(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        raise EarthvlError(f"{path} is a folder, which annotate gaia does not write: move it out of {path.parent}")


def write_images(records: list[Record], out: Path) -> set[str]:
    """Put each record's image into `out/images/<id>.<ext>` unless it is there already: a fetched one as a hard link
    to the fetch cache's file where the filesystem allows, a local one (the user's file) as a copy. An entry of that
    name that differs, a symbolic link included, is replaced, never written through. Returns the names."""
    folder = _image_folder(out)
    names = set()
    for record in records:
        assert record.image_file is not None
        name = f"{record.id}{record.image_file.suffix.lower()}"
        names.add(name)
        target = folder / name
        _refuse_folder(target)
        if _same_file(target, record.image_file, record.sha256):
            continue
        linkable = record.is_url and not record.image_file.is_symlink()
        with atomic.staged_file(target) as tmp:
            if not (linkable and _hard_link(record.image_file, tmp)):
                shutil.copyfile(record.image_file, tmp)
    return names


def remove_stray_images(out: Path, keep: set[str]) -> int:
    """Delete every entry of `out/images` not named in `keep` (images of records an earlier run kept, leftovers);
    symbolic links are deleted, not followed. Returns how many."""
    folder = _image_folder(out)
    removed = 0
    for entry in os.scandir(folder):
        if entry.name in keep:
            continue
        _refuse_folder(Path(entry.path))
        os.unlink(entry.path)
        removed += 1
    return removed
