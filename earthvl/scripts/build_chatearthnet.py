"""Build ChatEarthNet into a script-free Hub dataset folder: `earthvl build chatearthnet`.

    earthvl build chatearthnet --source sample/chatearthnet_zenodo --out hub/chatearthnet
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import TrlParser

from earthvl.builders.chatearthnet.build import CONFIGS, build_chatearthnet
from earthvl.builders.folder import report_summary


@dataclass
class BuildChatEarthNetArguments:
    """Options of `earthvl build chatearthnet`."""

    source: str = field(
        metadata={
            "help": "Folder with the four Zenodo zips (read in place), the extracted ChatEarthNet tree, or "
            "zenodo[:RECORD] to download the zips (resumable, md5-verified) first."
        }
    )
    out: str = field(metadata={"help": "Output folder: Parquet shards under data/, README.md card, build_report.json."})
    configs: list[str] | None = field(
        default=None, metadata={"help": f"Configs to build (default: all of {', '.join(CONFIGS)})."}
    )
    splits: list[str] | None = field(
        default=None, metadata={"help": "Splits to build (default: train validation test)."}
    )
    download_dir: str | None = field(
        default=None, metadata={"help": "Where --source zenodo puts the zips (default: $EARTHVL_CACHE/chatearthnet)."}
    )
    num_proc: int | None = field(
        default=None, metadata={"help": "Worker processes reading and checking the PNGs (default: one per core)."}
    )
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})


def make_parser(prog: str = "earthvl build chatearthnet") -> TrlParser:
    return TrlParser(BuildChatEarthNetArguments, prog=prog, description=__doc__.splitlines()[0])


def main(args: BuildChatEarthNetArguments) -> int:
    report = build_chatearthnet(
        args.source,
        args.out,
        configs=args.configs,
        splits=args.splits,
        progress=not args.quiet,
        download_dir=args.download_dir,
        num_proc=args.num_proc,
    )
    print(report_summary("ChatEarthNet", args.out, report))
    return 0
