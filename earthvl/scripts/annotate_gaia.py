"""Annotate scraped image-text records into a GAIA-format dataset: `earthvl annotate gaia`.

    earthvl annotate gaia --records scraped.jsonl --out my-gaia --backend openai --model gpt-4o-2024-08-06
    earthvl build gaia --source my-gaia --out hub/my-gaia --images folder
"""

from __future__ import annotations

import json

from trl import TrlParser

from earthvl.builders.gaia.annotate.options import AnnotateGaiaArguments
from earthvl.llm.options import BackendArguments
from earthvl.model_names import resolve_model


def make_parser(prog: str = "earthvl annotate gaia") -> TrlParser:
    return TrlParser((AnnotateGaiaArguments, BackendArguments), prog=prog, description=__doc__.splitlines()[0])


def main(args: AnnotateGaiaArguments, backend_args: BackendArguments) -> int:
    from earthvl.builders.gaia.annotate.pipeline import annotate_gaia

    if backend_args.backend == "transformers" and backend_args.model:
        backend_args.model = resolve_model(backend_args.model)
    report = annotate_gaia(args, backend_args)
    usage = json.dumps(report["usage"].get("total", {}))
    if "stopped" in report:
        print(f"GAIA annotation of {args.records} stopped ({report['stopped']}); usage {usage}")
        return 0
    splits = report["steps"]["split"]
    print(
        f"GAIA annotation of {args.records} -> {args.out}: train {splits['train']}, validation {splits['validation']}, "
        f"test {splits['test']}; {len(report['dropped'])} dropped, {len(report['flagged'])} flagged "
        f"(see annotation_report.json); usage {usage}"
    )
    return 0
