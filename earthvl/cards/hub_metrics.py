"""Results as the Hub's `model-index`: the Hub's task and metric names, each metric named with its protocol, and
one `huggingface_hub.EvalResult` per value.

Every metric of every results file becomes one `EvalResult` holding the file's exact value; a metric the file holds
as null (NaN, e.g. acc@5 with fewer than five classes) is left out of the model-index (the tables show it as n/a).
"""

from __future__ import annotations

from typing import Sequence

from huggingface_hub import EvalResult

from earthvl.cards.naming import is_hub_id
from earthvl.cards.results_files import EVAL_DIR, Results

SOURCE_NAME = "earthvl eval"

TASKS: dict[str, tuple[str, str]] = {
    "caption": ("image-to-text", "Image captioning"),
    "classify": ("zero-shot-image-classification", "Zero-shot scene classification"),
    # The Hub has no image-text retrieval task: retrieval ranks the embeddings the model extracts, which is what
    # the Hub's image-feature-extraction task covers (its task page lists image retrieval among its uses).
    "retrieve": ("image-feature-extraction", "Image-text retrieval"),
}
"""earthvl task -> (Hub task id, readable name)."""
PROTOCOLS = {
    "coco": "COCO toolkit",
    "hf": "HF evaluate style",
    "clip_benchmark": "CLIP_benchmark",
    "geochat": "GeoChat exact match",
}
METRICS: dict[str, tuple[str, str]] = {
    **{f"bleu_{n}": ("bleu", f"BLEU-{n}") for n in range(1, 5)},
    "bleu": ("bleu", "BLEU"),
    "meteor": ("meteor", "METEOR"),
    "rouge_l": ("rouge", "ROUGE-L"),
    "rouge1": ("rouge", "ROUGE-1"),
    "rouge2": ("rouge", "ROUGE-2"),
    "rougeL": ("rouge", "ROUGE-L"),
    "rougeLsum": ("rouge", "ROUGE-Lsum"),
    "cider": ("cider", "CIDEr"),
    "spice": ("spice", "SPICE"),
    "acc1": ("accuracy", "acc@1"),
    "acc5": ("accuracy", "acc@5"),
    "mean_per_class_recall": ("recall", "mean per-class recall"),
    "unmatched": ("unmatched", "answers naming no class"),
    **{
        f"{direction}_R@{k}": ("recall", f"{direction.replace('_to_', '-to-').replace('_', '-')} R@{k}")
        for direction in ("text_to_image", "image_to_text")
        for k in (1, 5, 10, 20)
    },
    "mean_recall": ("recall", "mean recall over R@1/5/10 both ways"),
}
"""Metric key of a results file -> (Hub metric type, readable name); other keys keep their own name."""
PROTOCOL_OF_METRIC = {("hf", "meteor"): "NLTK, HF evaluate style"}
"""Where a metric's implementation says more than its protocol's name."""


def metric_name(protocol: str, metric: str) -> tuple[str, str]:
    """(Hub metric type, name with the protocol), e.g. ('bleu', 'BLEU-4 (COCO toolkit)')."""
    kind, name = METRICS.get(metric, (metric.lower(), metric))
    return kind, f"{name} ({protocol_name(protocol, metric)})"


def protocol_name(protocol: str, metric: str) -> str:
    """How a metric's protocol is named in a card, e.g. 'COCO toolkit'."""
    return PROTOCOL_OF_METRIC.get((protocol, metric), PROTOCOLS.get(protocol, protocol))


def eval_results(loaded: Sequence[Results], model_id: str | None = None) -> list[EvalResult]:
    """One `EvalResult` per (results file, protocol, metric) with a value; sourced to the file under `eval/` in the
    repo `model_id` when that is a Hub id (the Hub wants a URL with a source name)."""
    out = []
    for r in loaded:
        task, dataset = r.data["task"], r.data["dataset"]
        url = f"https://huggingface.co/{model_id}/blob/main/{EVAL_DIR}/{r.name}" if is_hub_id(model_id) else None
        for protocol, values in r.data["metrics"].items():
            for metric, value in values.items():
                if value is None:
                    continue
                kind, name = metric_name(protocol, metric)
                out.append(
                    EvalResult(
                        task_type=TASKS[task][0],
                        task_name=TASKS[task][1],
                        dataset_type=dataset["id"],
                        dataset_name=dataset.get("name") or dataset["id"],
                        dataset_config=dataset.get("config"),
                        dataset_split=dataset["split"],
                        dataset_revision=dataset.get("revision"),
                        metric_type=kind,
                        metric_name=name,
                        metric_value=value,
                        source_name=SOURCE_NAME if url else None,
                        source_url=url,
                    )
                )
    return out
