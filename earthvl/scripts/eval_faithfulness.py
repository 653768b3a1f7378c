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
from earthvl.paths import refuse_overlap


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


def _first_of_each(pairs: list[tuple[str, str]], where: str, skipped: list[dict[str, str]]) -> dict[str, str]:
    """name -> caption, the first caption of each name; the later ones are added to `skipped`."""
    captions: dict[str, str] = {}
    for name, caption in pairs:
        if name in captions:
            skipped.append({"caption": name, "reason": f"{where}: a second caption for {name}; the first is scored"})
        else:
            captions[name] = caption
    return captions


def load_captions(args: FaithfulnessArguments) -> tuple[dict[str, str], list[dict[str, str]]]:
    """File name -> caption, from a predictions file, a ChatEarthNet layout or a built dataset folder; and the
    records left out, each with the reason (not a record with a name and a caption, or a repeated name)."""
    skipped: list[dict[str, str]] = []
    if args.predictions is not None:
        path = Path(args.predictions)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError) as error:
            raise EarthvlError(f"--predictions {path}: cannot read it as JSON lines: {error}") from error
        pairs = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise EarthvlError(f"--predictions {path}, line {number}: not JSON: {error}") from error
            if not (isinstance(row, dict) and all(isinstance(row.get(k), str) for k in ("id", "prediction"))):
                raise EarthvlError(
                    f"--predictions {path}, line {number}: needs a string 'id' (file name) and 'prediction'"
                )
            pairs.append((row["id"], row["prediction"]))
        return _first_of_each(pairs, str(path), skipped), skipped
    root = Path(args.dataset)
    json_file = root / layout.json_path(args.style, args.split)
    if json_file.is_file():
        try:
            records = json.loads(json_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise EarthvlError(f"{json_file}: cannot read it as JSON: {error}") from error
        if not isinstance(records, list):
            raise EarthvlError(f"{json_file}: expected a list of records")
        pairs = []
        for number, record in enumerate(records, 1):
            name = (record.get("image") or record.get("image_id")) if isinstance(record, dict) else None
            caption = _text(record.get("caption")) if isinstance(record, dict) else None
            if isinstance(name, str) and caption:
                pairs.append((name, caption))
            else:
                skipped.append({"caption": f"record {number}", "reason": f"{json_file}: record {number} has no "
                                "'image' (or 'image_id') string and one non-empty 'caption' string"})
        return _first_of_each(pairs, str(json_file), skipped), skipped
    if not root.is_dir():
        raise EarthvlError(f"--dataset {root} is not a folder")
    from datasets import load_dataset

    try:
        rows = load_dataset(str(root), args.style, split=args.split).select_columns(["file_name", "caption"])
    except (ValueError, FileNotFoundError) as error:
        raise EarthvlError(f"--dataset {root}: neither {layout.json_path(args.style, args.split)} nor a built "
                           f"dataset with config {args.style}, split {args.split}: {error}") from error
    return _first_of_each([(row["file_name"], row["caption"]) for row in rows], str(root), skipped), skipped


def main(args: FaithfulnessArguments) -> int:
    if args.out:
        check_writable(args.out, "results file")
        refuse_overlap(args.out, "results file", {"--labels": args.labels, "--dataset": args.dataset,
                                                   "--predictions": args.predictions})
    captions, skipped = load_captions(args)
    if not captions:
        example = f", e.g. {skipped[0]['reason']}" if skipped else ""
        raise EarthvlError(f"no caption to score in {args.predictions or args.dataset}{example}")
    labels = Path(args.labels)
    if not labels.is_dir():
        raise EarthvlError(f"--labels {labels} is not a folder")
    maps = {}
    for name in sorted(captions):
        try:
            path = find_map(labels, Path(name).stem)
            if path is None:
                raise MapRefused(f"no land-cover map for {name} in {labels}")
            maps[name] = read_label_map(path)
        except MapRefused as error:
            skipped.append({"caption": name, "reason": str(error)})
    if not maps:
        raise EarthvlError(f"no caption has a usable map in {labels}" + (f", e.g. {skipped[0]['reason']}" if skipped else ""))
    scored = {name: captions[name] for name in maps}
    if args.shuffle_maps:
        if len(maps) < 2:
            raise EarthvlError("--shuffle_maps pairs each caption with another patch's map: it needs at least two "
                               f"captions with maps, got {len(maps)}")
        pairs = shuffled_pairs(sorted(maps))
        maps = {name: maps[pairs[name]] for name in maps}
    summary, per_caption = evaluate_faithfulness(scored, maps)
    summary["skipped"] = skipped
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped"} | {"skipped": len(skipped)}, indent=1))
    if args.out:
        write_faithfulness(args.out, summary, per_caption)
    return 0
