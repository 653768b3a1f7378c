"""Caption Sentinel-2 patches from their land-cover maps the ChatEarthNet way: `earthvl generate chatearthnet`.

    earthvl generate chatearthnet --images patches/ --labels worldcover/ --out my_chatearthnet
    earthvl generate chatearthnet --images patches/ --labels maps/ --out out/ --backend openai \\
        --base_url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct --concurrency 16
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

from trl import TrlParser

from earthvl.errors import EarthvlError
from earthvl.generate.chatearthnet import SPLIT_BY, STYLES, GenerateOptions, generate_chatearthnet
from earthvl.llm.options import BackendArguments
from earthvl.model_names import resolve_model


@dataclass
class GenerateChatEarthNetArguments:
    """Options of `earthvl generate chatearthnet` (the backend options follow)."""

    images: str = field(
        metadata={"help": "Patches named <x>_<y>_patch<ij>: ChatEarthNet's extracted tree (its three band-group "
                  "folders), or a folder of RGB PNGs or 9-band GeoTIFFs (B4,B3,B2,B5,B6,B7,B8,B11,B12)."}
    )
    labels: str = field(
        metadata={"help": "Land-cover maps named like the patches: ChatEarthNet colour PNGs, or single-band ESA "
                  "WorldCover codes (10..100, 0 no data) as PNG or GeoTIFF; same size as the patch."}
    )
    out: str = field(metadata={"help": "Output folder: ChatEarthNet's layout, generation_report.json and the cache."})
    styles: list[str] = field(
        default_factory=lambda: list(STYLES),
        metadata={"help": "Caption styles: gpt35 (one request per patch, text statistics) and/or gpt4v (one request "
                  "per tile: four colour maps and percentages)."},
    )
    split_by: str = field(
        default="tile",
        metadata={"help": "tile: tiles shuffled 60/10/30 as upstream; spatiotemporal: stratified by geohash cell and "
                  "season (--dates).", "choices": list(SPLIT_BY)},
    )
    dates: str | None = field(
        default=None, metadata={"help": "JSON file {\"<x>_<y>\": \"YYYY-MM-DD\"}: acquisition dates for the seasons."}
    )
    generation_seed: int = field(
        default=0, metadata={"help": "Seed of the splits and of the size nouns drawn for prompts and templates "
                             "(--seed is the backend's sampling seed)."}
    )
    link_images: bool = field(default=False, metadata={"help": "Hard-link the PNGs into --out instead of copying."})
    reflectance_max: float = field(
        default=3000.0, metadata={"help": "GeoTIFF patches that are not 8-bit: this value maps to 255 (clipped)."}
    )
    cache: str | None = field(
        default=None, metadata={"help": "Cache of backend answers (default: OUT/generation_cache.jsonl); re-runs "
                                "ask again only for what is missing or failed."}
    )
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})

    def __post_init__(self) -> None:
        if not self.reflectance_max > 0:
            raise ValueError(f"reflectance_max must be positive, got {self.reflectance_max}")


def make_parser(prog: str = "earthvl generate chatearthnet") -> TrlParser:
    return TrlParser((GenerateChatEarthNetArguments, BackendArguments), prog=prog, description=__doc__.splitlines()[0])


def _dates(path: str | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        dates = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EarthvlError(f"--dates {path}: cannot read it as JSON: {error}") from error
    if not isinstance(dates, dict) or not all(isinstance(v, str) for v in dates.values()):
        raise EarthvlError(f"--dates {path}: expected an object of \"<x>_<y>\": \"YYYY-MM-DD\" strings")
    for tile, value in dates.items():
        try:
            datetime.date.fromisoformat(value[:10])
        except ValueError:
            raise EarthvlError(f"--dates {path}: {tile}: {value!r} is not a YYYY-MM-DD date") from None
    return dates


def main(args: GenerateChatEarthNetArguments, backend: BackendArguments) -> int:
    if backend.backend == "transformers" and backend.model:
        backend.model = resolve_model(backend.model)
    options = GenerateOptions(
        styles=args.styles,
        split_by=args.split_by,
        seed=args.generation_seed,
        dates=_dates(args.dates),
        link_images=args.link_images,
        reflectance_max=args.reflectance_max,
        cache=Path(args.cache) if args.cache else None,
        progress=not args.quiet,
    )
    report = generate_chatearthnet(args.images, args.labels, args.out, options, backend)
    rows = ", ".join(f"{style} {sum(n.values()):,}" for style, n in report["rows"].items())
    print(
        f"ChatEarthNet captions in {args.out}: {rows}; {report['patches']['refused']:,} patches refused, "
        f"{len(report['failures']):,} failed; {report['tokens']:,} tokens, cost {report['cost']:g} "
        f"(details: {args.out}/generation_report.json)"
    )
    return 0
