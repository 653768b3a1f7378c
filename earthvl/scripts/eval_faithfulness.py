"""Score captions against their land-cover maps: `earthvl eval faithfulness`.

    earthvl eval faithfulness --dataset my_chatearthnet --labels worldcover/ --split test
    earthvl eval faithfulness --predictions results/vlm.predictions.jsonl --labels maps/ --out faithfulness.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from earthvl.atomic import check_writable
from earthvl.builders.chatearthnet import layout
from earthvl.builders.chatearthnet.maps import MapRefused, find_map, read_label_map
from earthvl.errors import EarthvlError
from earthvl.eval.faithfulness import evaluate_faithfulness, shuffled_pairs, write_faithfulness


@dataclass
class FaithfulnessArguments:
    """Options of `earthvl eval faithfulness`."""

    labels: str = field(metadata={"help": "Land-cover maps named like the patches (colour PNGs, WorldCover PNG/GeoTIFF)."})
    dataset: str | None = field(
        default=None,
        metadata={"help": "Captions to score: a ChatEarthNet layout folder (json_files/, e.g. from `earthvl generate "
                  "chatearthnet`) or a built dataset folder (`earthvl build chatearthnet`)."},
    )
    predictions: str | None = field(
        default=None, metadata={"help": "Or: an `earthvl eval caption` predictions file (JSONL with id and prediction)."}
    )
    style: str = field(default="gpt35", metadata={"help": "Caption style / config of --dataset.", "choices": list(layout.CAPTION_SOURCES)})
    split: str = field(default="test", metadata={"help": "Split of --dataset.", "choices": list(layout.SPLITS)})
    shuffle_maps: bool = field(
        default=False, metadata={"help": "Pair each caption with another patch's map: the chance baseline."}
    )
    out: str | None = field(default=None, metadata={"help": "Write the summary and per-caption scores here (JSON)."})

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.predictions is None):
            raise ValueError("give exactly one of --dataset and --predictions")


def make_parser(prog: str = "earthvl eval faithfulness") -> TrlParser:
    return TrlParser(FaithfulnessArguments, prog=prog, description=__doc__.splitlines()[0])


def _text(value: object) -> str | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, str) else None


def load_captions(args: FaithfulnessArguments) -> dict[str, str]:
    """File name -> caption, from a predictions file, a ChatEarthNet layout or a built dataset folder."""
    if args.predictions is not None:
        path = Path(args.predictions)
        try:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, ValueError) as error:
            raise EarthvlError(f"--predictions {path}: cannot read it as JSON lines: {error}") from error
        if not all(isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("prediction"), str)
                   for r in rows):
            raise EarthvlError(f"--predictions {path}: every line needs a string 'id' (file name) and 'prediction'")
        return {r["id"]: r["prediction"] for r in rows}
    root = Path(args.dataset)
    json_file = root / layout.json_path(args.style, args.split)
    if json_file.is_file():
        try:
            records = json.loads(json_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise EarthvlError(f"{json_file}: cannot read it as JSON: {error}") from error
        if not isinstance(records, list):
            raise EarthvlError(f"{json_file}: expected a list of records")
        return {
            r.get("image") or r.get("image_id"): _text(r.get("caption"))
            for r in records
            if isinstance(r, dict) and isinstance(r.get("image") or r.get("image_id"), str) and _text(r.get("caption"))
        }
    if not root.is_dir():
        raise EarthvlError(f"--dataset {root} is not a folder")
    from datasets import load_dataset

    try:
        rows = load_dataset(str(root), args.style, split=args.split).select_columns(["file_name", "caption"])
    except (ValueError, FileNotFoundError) as error:
        raise EarthvlError(f"--dataset {root}: neither {layout.json_path(args.style, args.split)} nor a built "
                           f"dataset with config {args.style}, split {args.split}: {error}") from error
    return {row["file_name"]: row["caption"] for row in rows}


def main(args: FaithfulnessArguments) -> int:
    if args.out:
        check_writable(args.out, "results file")
    captions = load_captions(args)
    labels = Path(args.labels)
    if not labels.is_dir():
        raise EarthvlError(f"--labels {labels} is not a folder")
    maps, skipped = {}, []
    for name in sorted(captions):
        path = find_map(labels, Path(name).stem)
        try:
            if path is None:
                raise MapRefused(f"no land-cover map for {name} in {labels}")
            maps[name] = read_label_map(path)
        except MapRefused as error:
            skipped.append({"caption": name, "reason": str(error)})
    if not maps:
        raise EarthvlError(f"no caption has a usable map in {labels}" + (f", e.g. {skipped[0]['reason']}" if skipped else ""))
    scored = {name: captions[name] for name in maps}
    if args.shuffle_maps:
        pairs = shuffled_pairs(sorted(maps))
        maps = {name: maps[pairs[name]] for name in maps}
    summary, per_caption = evaluate_faithfulness(scored, maps)
    summary["skipped"] = skipped
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped"} | {"skipped": len(skipped)}, indent=1))
    if args.out:
        write_faithfulness(args.out, summary, per_caption)
    return 0
