"""The `earthvl eval` command that computes a results file again, written from the eval options' dataclasses."""

from __future__ import annotations

import shlex
from typing import Any, Mapping

from earthvl.cards.naming import is_hub_id
from earthvl.cards.results_files import EVAL_DIR
from earthvl.eval.arguments import TASK_ARGUMENTS, EvalArguments, option_flags


def reproduce_command(
    data: Mapping[str, Any], model_id: str, base: str | None = None, name: str = "results.json"
) -> str:
    """The `earthvl eval` command that computes `data` again for `model_id`: the options of `EvalArguments` and the
    task's dataclass that the results file records, written as `option_flags` writes them."""
    task, dataset, settings = data["task"], data["dataset"], data["settings"]
    generation = settings.get("generation") or {}
    shared = EvalArguments(
        model=model_id,
        dataset=dataset.get("name") or dataset["id"],
        out=f"{EVAL_DIR}/{name}",
        dataset_config=dataset.get("config"),
        split=dataset["split"],
        dataset_revision=dataset.get("revision"),
        base_model=base if is_hub_id(base) else None,
        max_samples=settings.get("max_samples"),
        dtype=settings.get("dtype"),
        load_in_4bit=bool(settings.get("load_in_4bit")),
        load_in_8bit=bool(settings.get("load_in_8bit")),
    )
    recorded: dict[str, Any] = {}
    if task == "caption":
        recorded = dict(
            protocols=list(data["metrics"]),
            prompt=settings.get("prompt") or None,
            num_beams=generation.get("num_beams"),
            max_new_tokens=generation.get("max_new_tokens"),
        )
    elif task == "classify" and "geochat" in data["metrics"]:
        recorded = dict(max_new_tokens=generation.get("max_new_tokens"))
    elif task == "retrieve":
        recorded = dict(long_text=settings.get("long_text"))
        if settings.get("long_text") == "chunks":
            recorded["max_text_chunks"] = settings.get("max_text_chunks")
    task_args = TASK_ARGUMENTS[task](**{key: value for key, value in recorded.items() if value is not None})
    return shlex.join(["earthvl", "eval", task, *option_flags(shared), *option_flags(task_args)])
