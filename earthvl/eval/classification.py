"""`earthvl eval classify`: zero-shot scene classification, by CLIP prompt ensembles (CLIP_benchmark) or by asking a
VLM to pick a class (GeoChat's prompt, exact match)."""

from __future__ import annotations

import torch

from earthvl.eval.arguments import ClassifyArguments, EvalArguments
from earthvl.eval.batches import Failures
from earthvl.eval.benchmarks import Benchmark
from earthvl.eval.generation import LlavaGenerator, generate_all
from earthvl.eval.metrics import classification_metrics
from earthvl.eval.eval_model import EvalModel
from earthvl.eval.tasks import TaskOutput, batch_size, image_batches
from earthvl.errors import EarthvlError
from earthvl.models.families import CLIP
from earthvl.models.clip import TextChunker, image_embeddings, text_limit, zero_shot_classifier
from earthvl.prompts import classify_instruction


def normalise_answer(text: str) -> str:
    """GeoChat's scene-classification matching: lower case, spaces and full stops removed."""
    return "".join(text.lower().split()).replace(".", "")


def embed_images(model: EvalModel, benchmark: Benchmark, args: EvalArguments, failures: Failures) -> tuple[list[int], torch.Tensor]:
    """The rows whose image decoded and their normalised CLIP image embeddings, each image embedded once."""
    rows, parts = [], []
    for indices, pixels in image_batches(model, benchmark, args, failures, "embedding images", stack=True):
        rows += indices
        parts.append(image_embeddings(model.model, pixels))
    if not rows:
        raise EarthvlError(f"no image of {benchmark.source} could be decoded: nothing to evaluate")
    return rows, torch.cat(parts)


def evaluate_classification(
    model: EvalModel, benchmark: Benchmark, args: EvalArguments, task_args: ClassifyArguments, failures: Failures
) -> TaskOutput:
    if model.family == CLIP.name:
        return _clip(model, benchmark, args, failures)
    return _vlm(model, benchmark, args, task_args, failures)


def _clip(model: EvalModel, benchmark: Benchmark, args: EvalArguments, failures: Failures) -> TaskOutput:
    rows, images = embed_images(model, benchmark, args, failures)
    tokenizer = model.processor.tokenizer
    chunker = TextChunker(tokenizer, text_limit(model.model, tokenizer), mode="truncate")
    classifier = zero_shot_classifier(model.model, chunker, benchmark.class_names, benchmark.templates)
    logits = 100 * images @ classifier.T
    labels = torch.tensor(benchmark.labels())[rows]
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices.tolist()
    return TaskOutput(
        metrics={"clip_benchmark": classification_metrics(logits, labels)},
        num_samples=len(rows),
        settings={"class_names": benchmark.class_names, "templates": list(benchmark.templates), "batch_size": batch_size(model, args)},
        predictions=[
            {"row": row, "id": failures.key(row), "label": int(label), "top5": best}
            for row, label, best in zip(rows, labels.tolist(), top)
        ],
    )


def _vlm(
    model: EvalModel, benchmark: Benchmark, args: EvalArguments, task_args: ClassifyArguments, failures: Failures
) -> TaskOutput:
    instruction = classify_instruction(benchmark.class_names)
    generator = LlavaGenerator(model.model, model.processor, instruction, max_new_tokens=task_args.max_new_tokens)
    size = batch_size(model, args, generator)
    batches = image_batches(model, benchmark, args, failures, "classifying", size=size)
    answers = generate_all(batches, generator, failures)
    rows = sorted(answers)
    if not rows:
        raise EarthvlError(f"no image of {benchmark.source} could be decoded: nothing to evaluate")
    classes = {normalise_answer(name): index for index, name in enumerate(benchmark.class_names)}
    unmatched = len(benchmark.class_names)
    predicted = [classes.get(normalise_answer(answers[row]), unmatched) for row in rows]
    labels = torch.tensor(benchmark.labels())[rows]
    # One-hot "logits" with an extra column for answers that name no class: top-1 is the named class, never a tie.
    one_hot = torch.nn.functional.one_hot(torch.tensor(predicted), unmatched + 1).float()
    scores = classification_metrics(one_hot, labels)
    metrics = {
        "acc1": scores["acc1"],
        "mean_per_class_recall": scores["mean_per_class_recall"],
        "unmatched": sum(p == unmatched for p in predicted) / len(rows),
    }
    return TaskOutput(
        metrics={"geochat": metrics},
        num_samples=len(rows),
        settings={
            "class_names": benchmark.class_names,
            "prompt": instruction,
            "generation": {"max_new_tokens": task_args.max_new_tokens, "num_beams": 1, "do_sample": False},
            "batch_size": size,
        },
        predictions=[
            {"row": row, "id": failures.key(row), "label": int(label), "answer": answers[row],
             "predicted": None if p == unmatched else p}
            for row, label, p in zip(rows, labels.tolist(), predicted)
        ],
    )
