"""Step 6, split and write: `spatiotemporal_split` (geohash-3 cell x season, GAIA's 70/10/20 train/validation/test)
and GAIA's `{train,val,test}_data.json` under the upstream field names, which `earthvl build gaia` builds (pixels
from `images/<id>.<ext>` beside them with `--images folder`, or fetched again from `image_src`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from earthvl import atomic
from earthvl.builders.gaia import layout
from earthvl.builders.gaia.annotate.records import Record
from earthvl.builders.gaia.annotate.report import AnnotationReport
from earthvl.builders.stratified_splits import spatiotemporal_split

STEP = "split"


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
