"""Build GAIA into a script-free Hub dataset folder: `earthvl build gaia`.

    earthvl build gaia --source sample/gaia --out hub/gaia
    earthvl build gaia --source azavras/GAIA --out hub/gaia --images fetch --image_dir gaia-images
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import TrlParser

from earthvl.builders.download.policy import FetchPolicy
from earthvl.builders.folder import report_summary
from earthvl.builders.gaia.build import CONFIGS, IMAGE_SOURCES, build_gaia
from earthvl.errors import check_positive
from earthvl.images import DEFAULT_MAX_PIXELS
from earthvl.builders.gaia.layout import CAPTION_PREFIX, HUB_ID


@dataclass
class BuildGaiaArguments:
    """Options of `earthvl build gaia`."""

    source: str = field(
        metadata={"help": f"Folder with train_data.json, val_data.json, test_data.json (and shards), or the Hub id {HUB_ID}."}
    )
    out: str = field(metadata={"help": "Output folder: Parquet shards under data/, README.md card, build_report.json."})
    images: str = field(
        default="webdataset",
        metadata={
            "help": "Where pixels come from: webdataset (img2dataset shards in {split}/ beside the JSONs), folder "
            "(<id>.<ext> files in --image_dir) or fetch (download from image_src into --image_dir, politely and "
            "resumably).",
            "choices": list(IMAGE_SOURCES),
        },
    )
    image_dir: str | None = field(
        default=None, metadata={"help": "Image folder for --images folder/fetch (default: <source>/images)."}
    )
    configs: list[str] | None = field(
        default=None, metadata={"help": f"Configs to build (default: all of {', '.join(CONFIGS)})."}
    )
    splits: list[str] | None = field(default=None, metadata={"help": "Splits to build (default: train validation test)."})
    strip_prefix: bool = field(
        default=False, metadata={"help": f"Remove the '{CAPTION_PREFIX}' opening of every synthetic caption."}
    )
    resize: int | None = field(
        default=None, metadata={"help": "Downscale images to this shortest side in pixels (never upscales; default: keep)."}
    )
    max_pixels: int = field(
        default=DEFAULT_MAX_PIXELS, metadata={"help": "Skip (and report) images with more pixels than this."}
    )
    allow_networks: list[str] | None = field(
        default=None,
        metadata={
            "help": "--images fetch: non-public networks the image URLs and their redirects may reach, e.g. "
            "10.0.0.0/8 for a mirror on your LAN (default: none; loopback, private and link-local addresses are "
            "refused before connecting)."
        },
    )
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})

    def __post_init__(self) -> None:
        check_positive(self, "max_pixels")


def make_parser(prog: str = "earthvl build gaia") -> TrlParser:
    return TrlParser(BuildGaiaArguments, prog=prog, description=__doc__.splitlines()[0])


def main(args: BuildGaiaArguments) -> int:
    report = build_gaia(
        args.source,
        args.out,
        configs=args.configs,
        splits=args.splits,
        images=args.images,
        image_dir=args.image_dir,
        strip_prefix=args.strip_prefix,
        resize=args.resize,
        max_pixels=args.max_pixels,
        progress=not args.quiet,
        fetch_policy=FetchPolicy(allow_networks=tuple(args.allow_networks or ())),
    )
    print(report_summary("GAIA", args.out, report))
    return 0
