"""`earthvl eval caption`: generate a caption for every test image and score it against all its references."""

from __future__ import annotations

from earthvl.eval.arguments import CaptionArguments, EvalArguments
from earthvl.eval.batches import Failures
from earthvl.eval.benchmarks import Benchmark
from earthvl.eval.caption_scores import PROTOCOLS, caption_metrics
from earthvl.eval.generation import Blip2Generator, LlavaGenerator, generate_all
from earthvl.eval.eval_model import EvalModel
from earthvl.eval.tasks import TaskOutput, batch_size, image_batches
from earthvl.errors import EarthvlError
from earthvl.models.families import VLM
from earthvl.models.blip2 import GAIA_GENERATION
from earthvl.prompts import CAPTION_INSTRUCTION
from earthvl.training_output import CAPTIONING_FILE, read_side_file

LLAVA_MAX_NEW_TOKENS = 256
"""Room for GAIA-length captions (about 100-200 words)."""


def caption_generator(model: EvalModel, args: CaptionArguments) -> tuple[object, dict]:
    """The generator for `model` and the settings it uses (for the results file)."""
    generation = {key: value for key, value in (("max_new_tokens", args.max_new_tokens), ("num_beams", args.num_beams)) if value}
    if model.family == VLM.name:
        prompt = CAPTION_INSTRUCTION if args.prompt is None else args.prompt
        generator = LlavaGenerator(model.model, model.processor, prompt, **{"max_new_tokens": LLAVA_MAX_NEW_TOKENS, **generation})
        return generator, {"prompt": prompt, "generation": _public(generator.generation)}
    saved = read_side_file(model.folder, CAPTIONING_FILE)
    prompt = saved.get("prompt", "") if args.prompt is None else args.prompt
    if not saved:  # not an earthvl training output: caption with GAIA's settings, not the checkpoint's defaults
        generation = {**GAIA_GENERATION, **generation}
    config = model.model.generation_config
    settings = {"max_new_tokens": config.max_new_tokens, "num_beams": config.num_beams, **generation}
    return Blip2Generator(model.model, model.processor, prompt, **generation), {"prompt": prompt, "generation": settings}


def _public(generation: dict) -> dict:
    return {key: value for key, value in generation.items() if key != "pad_token_id"}


def evaluate_captions(
    model: EvalModel, benchmark: Benchmark, args: EvalArguments, task_args: CaptionArguments, failures: Failures
) -> TaskOutput:
    unknown = [p for p in task_args.protocols if p not in PROTOCOLS]
    if unknown or not task_args.protocols:
        raise EarthvlError(f"unknown caption protocol(s) {unknown}; choose from {', '.join(PROTOCOLS)}")
    generator, settings = caption_generator(model, task_args)
    size = batch_size(model, args, generator)
    batches = image_batches(model, benchmark, args, failures, "captioning", size=size)
    texts = generate_all(batches, generator, failures)
    rows = sorted(texts)
    if not rows:
        raise EarthvlError(f"no image of {benchmark.source} could be decoded: nothing to caption")
    predictions = [texts[row] for row in rows]
    references = [benchmark.references(row) for row in rows]
    metrics = {protocol: caption_metrics(predictions, references, protocol) for protocol in task_args.protocols}
    return TaskOutput(
        metrics=metrics,
        num_samples=len(rows),
        settings={**settings, "batch_size": size, "protocols": list(task_args.protocols)},
        predictions=[
            {"row": row, "id": failures.key(row), "prediction": text, "references": refs}
            for row, text, refs in zip(rows, predictions, references)
        ],
    )
