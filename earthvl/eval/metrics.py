"""Zero-shot classification, cross-modal retrieval and corpus BLEU, matching the reference implementations.

Classification and retrieval follow LAION's CLIP_benchmark (clip_benchmark/metrics/zeroshot_classification.py and
zeroshot_retrieval.py); BLEU follows Hugging Face `evaluate`'s "bleu" metric (the 13a tokenizer, then TensorFlow NMT's
`compute_bleu`). All scores are fractions in [0, 1], not percentages.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

RECALL_KS = (1, 5, 10, 20)
"""The k of every R@k that `retrieval_metrics` reports."""
MEAN_RECALL_KS = (1, 5, 10)
"""The k whose R@k, in both directions, `mean_recall` averages (the RemoteCLIP / GeoRSCLIP "mR")."""


@torch.no_grad()
def classification_metrics(logits: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Top-1 and top-5 accuracy and mean per-class recall of single-label predictions, as CLIP_benchmark reports them.

    `logits` is N x C (any real dtype), `labels` the N true class indices in [0, C). Returns `acc1`, `acc5` (NaN when
    C < 5) and `mean_per_class_recall`: the mean, over the classes that occur in `labels`, of the fraction of their
    samples whose arg-max prediction is right (scikit-learn's `balanced_accuracy_score`: a class that is predicted
    but never occurs in `labels` has no recall and is left out of the mean, not counted as 0).

    Ties: as in CLIP_benchmark, accuracies come from one `torch.topk(logits, 5 if C >= 5 else 1)` and
    mean_per_class_recall from `argmax`. `argmax` picks the first (lowest) of tied indices, but the order `topk` gives
    tied values is left to torch, is not always lowest index first, and can differ between devices. With ties,
    acc1 and mean_per_class_recall can therefore disagree on the same sample.
    """
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels, device=logits.device)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits must be a non-empty N x C array, got shape {tuple(logits.shape)}")
    num_samples, num_classes = logits.shape
    if labels.shape != (num_samples,):
        raise ValueError(f"labels must have shape ({num_samples},) to match the logits, got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.long()
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min().item()}, {labels.max().item()}]")

    top = logits.topk(5 if num_classes >= 5 else 1, dim=1, largest=True, sorted=True).indices
    correct = top == labels[:, None]
    acc1 = correct[:, 0].sum().item() / num_samples
    acc5 = correct.any(dim=1).sum().item() / num_samples if num_classes >= 5 else math.nan

    predicted = logits.argmax(dim=1)
    support = torch.bincount(labels, minlength=num_classes)
    hits = torch.bincount(labels[predicted == labels], minlength=num_classes)
    present = support > 0
    mean_per_class_recall = (hits[present].double() / support[present].double()).mean().item()
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": mean_per_class_recall}


@torch.no_grad()
def retrieval_metrics(
    image_embeddings: ArrayLike, text_embeddings: ArrayLike, text_to_image: ArrayLike, *, chunk_size: int = 256
) -> dict[str, float]:
    """Text-to-image and image-to-text recall at 1, 5, 10 and 20, as CLIP_benchmark computes them, and their mean.

    `image_embeddings` is I x D, `text_embeddings` T x D, both already L2-normalised (they are not normalised here:
    the score of a pair is the plain dot product text . image). `text_to_image[t]` is the index of the image that
    text t describes. Every text is a query of its own, duplicate captions included.

    - `text_to_image_R@k`: fraction of texts whose image is among their k best-scoring images.
    - `image_to_text_R@k`: fraction of images with at least one of their texts among their k best-scoring texts; an
      image without any text counts as a miss.
    - `mean_recall`: the mean of the six R@1, R@5 and R@10 of both directions (the "mR" of RemoteCLIP and GeoRSCLIP;
      R@20 is left out of it).

    Where k exceeds the number of candidates, CLIP_benchmark's `torch.topk` raises; here k is capped at the number of
    candidates, so a text always hits (R@k = 1) and an image hits if it has any text. Ties follow `torch.topk`, called
    once per k as CLIP_benchmark does (which of tied candidates makes the cut is left to torch).

    Scores are computed on the device of the embeddings, `chunk_size` queries at a time, so at most
    `chunk_size * max(I, T)` scores exist at once.
    """
    images = torch.as_tensor(image_embeddings)
    texts = torch.as_tensor(text_embeddings, device=images.device)
    text_to_image = torch.as_tensor(text_to_image, device=images.device)
    if images.ndim != 2 or texts.ndim != 2 or 0 in (images.shape[0], texts.shape[0]) or images.shape[1] != texts.shape[1]:
        raise ValueError(
            f"embeddings must be non-empty I x D and T x D arrays, got {tuple(images.shape)} and {tuple(texts.shape)}"
        )
    if texts.dtype != images.dtype:
        raise ValueError(f"image and text embeddings must share a dtype, got {images.dtype} and {texts.dtype}")
    if text_to_image.shape != (texts.shape[0],) or text_to_image.is_floating_point() or text_to_image.dtype == torch.bool:
        raise ValueError(
            f"text_to_image must hold one integer image index per text: shape ({texts.shape[0]},), "
            f"got shape {tuple(text_to_image.shape)} and dtype {text_to_image.dtype}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    num_images, num_texts = images.shape[0], texts.shape[0]
    text_to_image = text_to_image.long()
    if text_to_image.min() < 0 or text_to_image.max() >= num_images:
        raise ValueError(f"text_to_image must lie in [0, {num_images})")

    text_hits = torch.zeros(len(RECALL_KS), dtype=torch.long, device=images.device)
    for start in range(0, num_texts, chunk_size):
        scores = texts[start : start + chunk_size] @ images.T
        targets = text_to_image[start : start + chunk_size, None]
        for i, k in enumerate(RECALL_KS):
            top = scores.topk(min(k, num_images), dim=1).indices
            text_hits[i] += (top == targets).any(dim=1).sum()

    image_hits = torch.zeros(len(RECALL_KS), dtype=torch.long, device=images.device)
    for start in range(0, num_images, chunk_size):
        scores = images[start : start + chunk_size] @ texts.T
        targets = torch.arange(start, start + scores.shape[0], device=images.device)[:, None]
        for i, k in enumerate(RECALL_KS):
            top = scores.topk(min(k, num_texts), dim=1).indices
            image_hits[i] += (text_to_image[top] == targets).any(dim=1).sum()

    metrics = {}
    for k, hits in zip(RECALL_KS, text_hits.tolist()):
        metrics[f"text_to_image_R@{k}"] = hits / num_texts
    for k, hits in zip(RECALL_KS, image_hits.tolist()):
        metrics[f"image_to_text_R@{k}"] = hits / num_images
    averaged = [metrics[f"{direction}_R@{k}"] for direction in ("text_to_image", "image_to_text") for k in MEAN_RECALL_KS]
    metrics["mean_recall"] = sum(averaged) / len(averaged)
    return metrics


# mteval-v13a's tokenisation as sacrebleu's `tokenizer_13a` (and the copy in `evaluate`'s bleu metric) writes it.
_13A_RULES = [
    # ASCII punctuation and symbols other than . , ' and -
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    # period and comma unless preceded by a digit
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    # period and comma unless followed by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    # dash when preceded by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
]


def _tokenize_13a(line: str) -> list[str]:
    """The tokens of `line` under the 13a tokenizer of WMT's mteval-v13a (sacrebleu's default), as `evaluate` splits them."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def _ngram_counts(tokens: list[str], max_order: int) -> collections.Counter:
    """How often each n-gram of `tokens`, for n from 1 to `max_order`, occurs."""
    counts: collections.Counter = collections.Counter()
    for order in range(1, max_order + 1):
        for start in range(len(tokens) - order + 1):
            counts[tuple(tokens[start : start + order])] += 1
    return counts


def corpus_bleu(
    predictions: Sequence[str], references: Sequence[str | Sequence[str]], max_order: int = 4, smooth: bool = False
) -> dict[str, float]:
    """Corpus BLEU of `predictions` against their `references`, exactly as `evaluate.load("bleu").compute` gives it.

    Texts are tokenised with the 13a tokenizer, then scored as TensorFlow NMT's `compute_bleu` does: clipped n-gram
    matches against the union (maximum count per n-gram) of each prediction's references, a brevity penalty against
    the *shortest* reference of each prediction, and with `smooth` Lin & Och (2004) add-one smoothing of every
    precision. Each entry of `references` is a list of references or one reference string.

    Returns `bleu`, `precision_1` .. `precision_{max_order}`, `brevity_penalty`, `length_ratio`,
    `translation_length` and `reference_length`, all floats. Where every prediction is empty, `evaluate` divides by
    zero; here the brevity penalty, length ratio and BLEU are then 0.
    """
    if max_order < 1:
        raise ValueError(f"max_order must be at least 1, got {max_order}")
    if len(predictions) != len(references) or not predictions:
        raise ValueError(
            f"need as many references as predictions, and at least one; got {len(predictions)} and {len(references)}"
        )
    matches = [0] * max_order
    possible = [0] * max_order
    translation_length = reference_length = 0
    for prediction, refs in zip(predictions, references):
        ref_tokens = [_tokenize_13a(refs)] if isinstance(refs, str) else [_tokenize_13a(ref) for ref in refs]
        if not ref_tokens:
            raise ValueError(f"prediction {prediction!r} has no reference")
        tokens = _tokenize_13a(prediction)
        translation_length += len(tokens)
        reference_length += min(len(ref) for ref in ref_tokens)
        merged: collections.Counter = collections.Counter()
        for ref in ref_tokens:
            merged |= _ngram_counts(ref, max_order)
        for ngram, count in (_ngram_counts(tokens, max_order) & merged).items():
            matches[len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            possible[order - 1] += max(len(tokens) - order + 1, 0)
    if reference_length == 0:
        raise ValueError("every reference is empty after tokenisation")

    if smooth:
        precisions = [(m + 1.0) / (p + 1.0) for m, p in zip(matches, possible)]
    else:
        precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    # the same operations in the same order as nmt_bleu, so that the result is equal to the last bit
    geo_mean = math.exp(sum((1.0 / max_order) * math.log(p) for p in precisions)) if min(precisions) > 0 else 0.0
    ratio = translation_length / reference_length
    if ratio > 1.0:
        brevity_penalty = 1.0
    elif ratio == 0.0:
        brevity_penalty = 0.0
    else:
        brevity_penalty = math.exp(1 - 1.0 / ratio)

    result = {"bleu": geo_mean * brevity_penalty}
    result.update({f"precision_{order}": p for order, p in enumerate(precisions, start=1)})
    result.update(
        brevity_penalty=brevity_penalty,
        length_ratio=ratio,
        translation_length=float(translation_length),
        reference_length=float(reference_length),
    )
    return result
