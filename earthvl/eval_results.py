"""The results file `earthvl eval` writes and `earthvl card` reads: one task of one model on one dataset split.

Layout (JSON, one object)::

    {
      "format": "earthvl-eval/1",
      "task": "caption" | "classify" | "retrieve",
      "model":   {"id", "revision", "family" ("vlm" | "clip" | "blip2", `earthvl.models.families`),
                  "base_model" (adapters) or null},
      "dataset": {"name" (short name or null), "id" (Hub id or local path), "config", "split", "revision",
                  "columns" {role: column}, "num_samples"},
      "metrics": {protocol: {metric: float or null (NaN)}},
      "failures": {"bad_images": int, "failed_generations": int, "rows": [{"row", "id", "reason"}]},
      "settings": {...},        # prompt, templates, generation settings, batch size, dtype, device
      "versions": {package: version},
      "started": ISO 8601 UTC, "seconds": float
    }

`metrics` is always keyed by protocol, so every number says how it was computed: `coco` and `hf` for captions,
`clip_benchmark` for CLIP classification and retrieval, `geochat` for a VLM's exact-match classification.
Each row's prediction goes beside it, in `predictions_path(results file)` (JSON lines with `row`, `id`, ...).
"""

from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path
from typing import Any

from earthvl.atomic import write_bytes
from earthvl.errors import EarthvlError

FORMAT = "earthvl-eval/1"
TASKS = ("caption", "classify", "retrieve")
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "caption": ("coco", "hf"),
    "classify": ("clip_benchmark", "geochat"),
    "retrieve": ("clip_benchmark",),
}
"""Task -> the protocols its metrics can be computed under."""
VERSIONED_PACKAGES = (
    "earthvl", "torch", "transformers", "peft", "datasets", "huggingface_hub", "bitsandbytes", "accelerate",
    "pycocoevalcap", "rouge-score", "nltk",
)  # fmt: skip
REQUIRED = {
    "format": str, "task": str, "model": dict, "dataset": dict, "metrics": dict, "failures": dict, "settings": dict,
    "versions": dict, "started": str, "seconds": (int, float),
}  # fmt: skip


PREDICTIONS_SUFFIX = ".predictions.jsonl"


def predictions_path(results_path: str | Path) -> Path:
    """The predictions file beside a results file: `x.json` -> `x.predictions.jsonl`."""
    results_path = Path(results_path)
    return results_path.with_name(results_path.stem + PREDICTIONS_SUFFIX)


def package_versions() -> dict[str, str | None]:
    """The installed version of every package a result depends on (None where one is not installed)."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers and the Hub's YAML would reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def check_results(results: dict[str, Any], source: str = "results") -> dict[str, Any]:
    """`results` if it is a valid results object, else an error naming `source` and the bad field."""
    if not isinstance(results, dict):
        raise EarthvlError(f"{source}: expected a JSON object, got {type(results).__name__}")
    for field, kind in REQUIRED.items():
        if field not in results:
            raise EarthvlError(f"{source}: missing field {field!r}")
        if not isinstance(results[field], kind):
            raise EarthvlError(f"{source}: field {field!r} has the wrong type ({type(results[field]).__name__})")
    if results["format"] != FORMAT:
        raise EarthvlError(f"{source}: unknown format {results['format']!r} (this earthvl reads {FORMAT!r})")
    task = results["task"]
    if task not in TASKS:
        raise EarthvlError(f"{source}: unknown task {task!r}; tasks are {', '.join(TASKS)}")
    for field in ("id", "family"):
        if not results["model"].get(field):
            raise EarthvlError(f"{source}: model.{field} is missing")

    for field in ("id", "split"):
        if not results["dataset"].get(field):
            raise EarthvlError(f"{source}: dataset.{field} is missing")
    for protocol, values in results["metrics"].items():
        if protocol not in PROTOCOLS[task]:
            raise EarthvlError(f"{source}: protocol {protocol!r} is not one of task {task!r}'s: {', '.join(PROTOCOLS[task])}")
        if not isinstance(values, dict) or not values:
            raise EarthvlError(f"{source}: metrics.{protocol} must be a non-empty object of metric -> number")
        for name, value in values.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise EarthvlError(f"{source}: metrics.{protocol}.{name} is not a number: {value!r}")
    return results


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Check `results` and write it to `path` as indented JSON (atomically; NaN written as null)."""
    path = Path(path)
    results = _json_safe(results)
    check_results(results, str(path))
    return write_bytes(path, (json.dumps(results, indent=2, ensure_ascii=False) + "\n").encode())


def read_results(path: str | Path) -> dict[str, Any]:
    """A results file, checked; errors name the file and the field."""
    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise EarthvlError(f"results file {path} does not exist") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EarthvlError(f"results file {path} is not readable JSON: {error}") from error
    return check_results(results, str(path))
