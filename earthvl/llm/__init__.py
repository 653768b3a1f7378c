"""Language-model backends shared by earthvl's generators and annotators: one request/result shape, OpenAI-compatible
endpoints and local transformers models, a resumable per-record cache and a bounded, budgeted runner."""

from earthvl.llm.backends import Backend, ChatRequest, ChatResult, make_backend
from earthvl.llm.options import BackendArguments

__all__ = ["Backend", "BackendArguments", "ChatRequest", "ChatResult", "make_backend"]
