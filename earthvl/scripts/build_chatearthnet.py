"""Build ChatEarthNet into a script-free Hub dataset folder: `earthvl build chatearthnet`.

    earthvl build chatearthnet --source sample/chatearthnet_zenodo --out hub/chatearthnet
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import TrlParser

from earthvl.builders.chatearthnet.build import CONFIGS, build_chatearthnet


@dataclass
class BuildChatEarthNetArguments:
    """Options of `earthvl build chatearthnet`."""

    source: str = field(
        metadata={"help": "Folder with the four Zenodo zips (read in place) or the extracted ChatEarthNet tree."}
    )
    out: str = field(metadata={"help": "Output folder: Parquet shards under data/, README.md card, build_report.json."})
    configs: list[str] | None = field(
        default=None, metadata={"help": f"Configs to build (default: all of {', '.join(CONFIGS)})."}
    )
    splits: list[str] | None = field(
        default=None, metadata={"help": "Splits to build (default: train validation test)."}
    )
    quiet: bool = field(default=False, metadata={"help": "No progress bars."})


def make_parser(prog: str = "earthvl build chatearthnet") -> TrlParser:
    return TrlParser(BuildChatEarthNetArguments, prog=prog, description=__doc__.splitlines()[0])


def main(args: BuildChatEarthNetArguments) -> int:
    report = build_chatearthnet(args.source, args.out, configs=args.configs, splits=args.splits, progress=not args.quiet)
    print(f"ChatEarthNet built into {args.out} from the {report['source_kind']} at {args.source}")
    for config, splits in report["rows"].items():
        print(f"  {config}: " + ", ".join(f"{split} {rows}" for split, rows in splits.items()))
    if report["skipped"]:
        print(f"  skipped {len(report['skipped'])} records; reasons in {args.out}/build_report.json")
    return 0
