"""`earthvl eval retrieve`: text-to-image and image-to-text recall of a CLIP model, every caption its own query."""

from __future__ import annotations

import torch

from earthvl.eval.arguments import EvalArguments, RetrieveArguments
from earthvl.eval.batches import Failures
from earthvl.eval.benchmarks import Benchmark
from earthvl.eval.classification import embed_images
from earthvl.eval.metrics import retrieval_metrics
from earthvl.eval.eval_model import EvalModel
from earthvl.eval.tasks import TaskOutput, batch_size
from earthvl.models.clip import TextChunker, text_embeddings, text_limit


def evaluate_retrieval(
    model: EvalModel, benchmark: Benchmark, args: EvalArguments, task_args: RetrieveArguments, failures: Failures
) -> TaskOutput:
    rows, images = embed_images(model, benchmark, args, failures)
    texts, owners = [], []
    for position, row in enumerate(rows):
        captions = benchmark.references(row)
        texts += captions
        owners += [position] * len(captions)
    tokenizer = model.processor.tokenizer
    chunker = TextChunker(tokenizer, text_limit(model.model, tokenizer), mode=task_args.long_text, max_chunks=task_args.max_text_chunks)
    captions = text_embeddings(model.model, chunker, texts)
    return TaskOutput(
        metrics={"clip_benchmark": retrieval_metrics(images, captions, torch.tensor(owners))},
        num_samples=len(rows),
        settings={
            "long_text": task_args.long_text,
            "max_text_chunks": task_args.max_text_chunks,
            "texts": len(texts),
            "text_fit": chunker.report(texts),
            "batch_size": batch_size(model, args),
        },
    )
