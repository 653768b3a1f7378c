"""Evaluation: caption, classification and retrieval metrics matching the reference implementations, and the
`earthvl eval` harness that computes them for any CLIP, BLIP-2 or LLaVA checkpoint."""

from earthvl.eval.caption_scores import caption_metrics
from earthvl.eval.metrics import classification_metrics, retrieval_metrics

__all__ = ["caption_metrics", "classification_metrics", "retrieval_metrics"]
