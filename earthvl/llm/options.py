"""The backend options every LLM-driven command shares (`earthvl generate chatearthnet`, GAIA annotation)."""

from __future__ import annotations

from dataclasses import dataclass, field

from earthvl.errors import check_positive

BACKENDS = ("template", "openai", "transformers")
"""`template` is a command's own offline renderer (where it has one); the others are `earthvl.llm.backends`."""


@dataclass
class BackendArguments:
    """How to reach the language model, how hard to push it and how much to spend."""

    backend: str = field(
        default="template",
        metadata={
            "help": "template (offline, deterministic; only commands with a renderer of their own), openai (any "
            "OpenAI-compatible chat endpoint: OpenAI, vLLM, TGI, `transformers serve`) or transformers (a local model "
            "loaded with from_pretrained).",
            "choices": list(BACKENDS),
        },
    )
    base_url: str | None = field(
        default=None,
        metadata={"help": "openai: the endpoint's base URL, e.g. http://127.0.0.1:8000/v1 (default: OpenAI's API). "
                  "The key is read from OPENAI_API_KEY and never logged."},
    )
    model: str | None = field(
        default=None,
        metadata={"help": "openai: the model name the endpoint serves; transformers: a Hub id or local folder."},
    )
    concurrency: int = field(default=4, metadata={"help": "openai: requests in flight at once (threads)."})
    batch_size: int = field(default=8, metadata={"help": "transformers: requests generated together in one batch."})
    timeout: float = field(default=120.0, metadata={"help": "openai: seconds one request may take before it is retried."})
    max_retries: int = field(
        default=5,
        metadata={"help": "openai: retries of a request after a 429, a 5xx, a timeout or a dropped connection, with "
                  "exponential backoff that honours the server's Retry-After."},
    )
    max_requests: int | None = field(
        default=None,
        metadata={"help": "Stop cleanly after this many backend requests in this run (cached records are free)."},
    )
    budget: float | None = field(
        default=None,
        metadata={"help": "Stop cleanly once the cost of this run reaches this amount (in the currency of the prices)."},
    )
    price_per_1k: float | None = field(
        default=None, metadata={"help": "One price of 1,000 tokens, prompt or completion (sets both prices below)."}
    )
    price_per_1k_input: float = field(
        default=0.0, metadata={"help": "Price of 1,000 prompt tokens, for the cost accounting and --budget."}
    )
    price_per_1k_output: float = field(
        default=0.0, metadata={"help": "Price of 1,000 completion tokens, for the cost accounting and --budget."}
    )
    temperature: float | None = field(
        default=None, metadata={"help": "Sampling temperature (default: the command's, usually the upstream one)."}
    )
    max_tokens: int | None = field(
        default=None, metadata={"help": "Longest answer in tokens (default: the command's, usually the upstream one)."}
    )
    seed: int | None = field(default=None, metadata={"help": "Sampling seed sent with every request, where supported."})
    device: str | None = field(default=None, metadata={"help": "transformers: device map (default: auto)."})
    dtype: str = field(default="auto", metadata={"help": "transformers: weight dtype (auto, bfloat16, float16, float32)."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "transformers: run code shipped with the model (only for models you trust)."}
    )

    def __post_init__(self) -> None:
        check_positive(self, "concurrency", "batch_size", "max_requests", "max_tokens")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        for name in ("max_retries", "price_per_1k", "price_per_1k_input", "price_per_1k_output", "budget", "temperature"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        if self.price_per_1k is not None:
            self.price_per_1k_input = self.price_per_1k_output = self.price_per_1k
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """What these tokens cost at the configured prices."""
        return (prompt_tokens * self.price_per_1k_input + completion_tokens * self.price_per_1k_output) / 1000.0
