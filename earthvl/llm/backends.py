"""Chat backends: one request and result shape for OpenAI-compatible endpoints and local transformers models.

A request's messages are in OpenAI's chat format; images are `image_url` parts holding `data:` URLs, which every
OpenAI-compatible server (OpenAI, vLLM, TGI, `transformers serve`) reads and which the local backend decodes itself.
Failures of one request raise `RequestFailed` (the runner records it for that record and goes on); failures that
would repeat for every request (a refused key, an unreachable endpoint, an unknown model) raise `BackendUnusable`.
"""

from __future__ import annotations

import base64
import binascii
import os
import socket
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from earthvl.errors import EarthvlError
from earthvl.http_headers import retry_after
from earthvl.llm.options import BackendArguments

DEFAULT_MAX_TOKENS = 300
MAX_RETRY_WAIT = 120.0
"""Longest pause before a retry, whatever a server's Retry-After asks for."""


class BackendUnusable(EarthvlError):
    """The backend cannot answer any request as configured (refused key, unreachable endpoint, unknown model)."""


class RequestFailed(Exception):
    """One request got no usable answer; the reason is recorded for its record and the run goes on."""


class _TimedOut(Exception):
    """A try of a request ran past its timeout in all (`OpenAIBackend._create_within_timeout`)."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make."""

    messages: list[dict[str, Any]]
    """OpenAI chat messages; content a string or a list of `text` / `image_url` (data URL) parts."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    """A JSON schema the answer must follow (structured output), or None for free text."""
    schema_name: str = "answer"

    def sampling(self) -> dict[str, Any]:
        """Everything but the messages: what, beside the prompt, decides the answer (part of cache keys)."""
        settings = asdict(self)
        del settings["messages"]
        return settings


@dataclass(frozen=True)
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    finish_reason: str | None = None
    """`stop`, `length` (cut at max_tokens), ... as the backend reports it."""


class Backend(Protocol):
    def chat(self, request: ChatRequest) -> ChatResult:
        """Answer one request; raises RequestFailed or BackendUnusable."""

    def settings(self) -> dict[str, Any]:
        """What identifies this backend's answers (backend kind, endpoint, model): part of cache keys."""


def image_data_url(data: bytes, mime: str = "image/png") -> str:
    """A `data:` URL holding an encoded image, as chat requests carry images."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_url(url: str) -> bytes:
    """The bytes of a base64 `data:` URL; a RequestFailed for anything else (local models fetch nothing)."""
    head, sep, payload = url.partition(",")
    if not (url.startswith("data:") and sep and head.endswith(";base64")):
        raise RequestFailed("images must be base64 data: URLs for a local model")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as error:
        raise RequestFailed(f"bad base64 in an image data URL: {error}") from error


def retry_after_seconds(headers: Any) -> float | None:
    """The pause a response's `Retry-After` (seconds or an HTTP date) or `retry-after-ms` header asks for."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    return retry_after(headers.get("retry-after"))


def shown_url(url: str | None) -> str | None:
    """`url` as reports and messages may show it: without a user name, password or query (where some endpoints take
    their key)."""
    if url is None:
        return None
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], query=""))


def _caused_by(error: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    while error is not None:
        if isinstance(error, kinds):
            return True
        error = error.__cause__ or error.__context__
    return False


class OpenAIBackend:
    """Any OpenAI-compatible chat endpoint through the official `openai` client, with tenacity retries."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
    ) -> None:
        import openai

        key = os.environ.get("OPENAI_API_KEY")
        if not key and base_url is None:
            raise BackendUnusable("the openai backend needs OPENAI_API_KEY (or --base_url for a server without keys)")
        self.model, self.base_url, self.timeout = model, shown_url(base_url), timeout
        parts = urlsplit(base_url or "")
        self._secrets = [secret for secret in (key, parts.password, *(v for _, v in parse_qsl(parts.query))) if secret]
        self.max_retries, self.backoff = max_retries, backoff
        # The client's own retries are off: tenacity retries, honouring Retry-After, and counts the tries.
        self._client = openai.OpenAI(api_key=key or "unused", base_url=base_url, timeout=timeout, max_retries=0)
        self._openai = openai

    def settings(self) -> dict[str, Any]:
        return {"backend": "openai", "base_url": self.base_url, "model": self.model}

    def _where(self) -> str:
        return self.base_url or "the OpenAI API"

    def _redacted(self, text: str) -> str:
        """`text` from the server without the key or the URL's credentials: some servers echo the request."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _create_within_timeout(self, request: ChatRequest) -> Any:
        """`_create`, given up after `timeout` seconds in all: the client's own timeout bounds each read, so an answer
        trickled in byte by byte could otherwise hold the request for as long as the server likes. The abandoned
        call ends in its daemon thread whenever the server lets it."""
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["response"] = self._create(request)
            except BaseException as error:  # noqa: BLE001 - handed to the caller's thread below
                outcome["error"] = error

        thread = threading.Thread(target=call, name="earthvl-chat-request", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            raise _TimedOut()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["response"]

    def _retryable(self, error: BaseException) -> bool:
        openai = self._openai
        if isinstance(error, openai.APIStatusError):
            return error.status_code == 429 or error.status_code >= 500
        return isinstance(error, (openai.APIConnectionError, _TimedOut))  # the client's timeouts included

    def _wait(self, retry_state: Any) -> float:
        from tenacity import wait_exponential_jitter

        error = retry_state.outcome.exception()
        asked = retry_after_seconds(getattr(getattr(error, "response", None), "headers", None))
        if asked is not None:
            return min(asked, MAX_RETRY_WAIT)
        return wait_exponential_jitter(multiplier=self.backoff, max=MAX_RETRY_WAIT)(retry_state)

    def _create(self, request: ChatRequest) -> Any:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.top_p is not None:
            kwargs["top_p"] = request.top_p
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.json_schema, "strict": True},
            }
        return self._client.chat.completions.create(**kwargs)

    def chat(self, request: ChatRequest) -> ChatResult:
        import httpx
        from tenacity import Retrying, retry_if_exception, stop_after_attempt

        openai = self._openai
        retrying = Retrying(
            retry=retry_if_exception(self._retryable),
            wait=self._wait,
            stop=stop_after_attempt(self.max_retries + 1),
            reraise=True,
        )
        tries = f"after {self.max_retries + 1} tries"
        try:
            response = retrying(self._create_within_timeout, request)
        except openai.AuthenticationError as error:
            # The body is left out: some servers echo part of the key.
            raise BackendUnusable(f"{self._where()} refused the key (HTTP {error.status_code}); check OPENAI_API_KEY") from None
        except (openai.PermissionDeniedError, openai.NotFoundError) as error:
            raise BackendUnusable(self._redacted(
                f"{self._where()} answered HTTP {error.status_code} for model {self.model!r}: {error.message}"
            )) from None
        except (openai.APITimeoutError, _TimedOut):
            raise RequestFailed(f"timed out ({self.timeout:g} s per try) {tries}") from None
        except openai.APIConnectionError as error:
            if _caused_by(error, (httpx.ConnectError, ConnectionRefusedError, socket.gaierror)):
                raise BackendUnusable(f"cannot reach {self._where()} ({error.__cause__}) {tries}") from None
            raise RequestFailed(f"connection broken {tries}: {error.__cause__ or error}") from None
        except openai.APIStatusError as error:
            if self._retryable(error):
                raise RequestFailed(f"HTTP {error.status_code} {tries}") from None
            detail = " ".join(error.response.text.split())[:300]
            raise RequestFailed(self._redacted(f"HTTP {error.status_code}: {detail or error.message}")) from None
        except openai.APIResponseValidationError as error:
            raise RequestFailed(self._redacted(f"not a chat completion: {error.message}")) from None
        except ValueError as error:  # a body that is not JSON
            raise RequestFailed(self._redacted(f"not a chat completion: {error}")) from None
        return self._result(response)

    def _result(self, response: Any) -> ChatResult:
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise RequestFailed(self._redacted(f"not a chat completion (no choices): {str(response)[:200]!r}"))
        text = choices[0].message.content or ""
        if not isinstance(text, str):
            raise RequestFailed(f"not a chat completion: the message content is {type(text).__name__}, not text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestFailed("the answer is not valid Unicode (it holds a lone surrogate)") from None
        usage = getattr(response, "usage", None)
        tokens = {name: getattr(usage, name, 0) or 0 for name in ("prompt_tokens", "completion_tokens")}
        for name, value in tokens.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise RequestFailed(f"not a chat completion: usage.{name} is {str(value)[:40]!r}, not a count")
        return ChatResult(
            text=text,
            prompt_tokens=tokens["prompt_tokens"],
            completion_tokens=tokens["completion_tokens"],
            model=getattr(response, "model", None) or self.model,
            finish_reason=choices[0].finish_reason,
        )


@dataclass
class TransformersBackend:
    """A local chat model or VLM loaded with `from_pretrained` (safetensors only), generating in batches."""

    model_name: str
    batch_size: int = 8
    device: str | None = None
    dtype: str = "auto"
    trust_remote_code: bool = False
    _model: Any = field(default=None, init=False, repr=False)
    _processor: Any = field(default=None, init=False, repr=False)
    _vision: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        path = self.model_name  # entry points resolve earthvl's tiny model names (earthvl.model_names)
        common = {"trust_remote_code": self.trust_remote_code}
        try:
            config = AutoConfig.from_pretrained(path, **common)
            self._vision = config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
            auto = AutoModelForImageTextToText if self._vision else AutoModelForCausalLM
            self._model = auto.from_pretrained(
                path, dtype=self.dtype, device_map=self.device or "auto", use_safetensors=True, **common
            ).eval()
            self._processor = AutoProcessor.from_pretrained(path, **common)
        except (OSError, ValueError) as error:
            raise BackendUnusable(f"cannot load model {self.model_name!r}: {error}") from error
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @property
    def tokenizer(self) -> Any:
        return getattr(self._processor, "tokenizer", self._processor)

    def settings(self) -> dict[str, Any]:
        return {"backend": "transformers", "model": self.model_name, "dtype": self.dtype}

    def chat(self, request: ChatRequest) -> ChatResult:
        return self.chat_batch([request])[0]

    def chat_batch(self, requests: list[ChatRequest]) -> list[ChatResult | RequestFailed]:
        """Answers to `requests` in order (a RequestFailed in place of an answer that could not be made); requests
        with the same sampling settings are generated together."""
        results: list[ChatResult | RequestFailed | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.sampling().items())), []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                try:
                    answers = self._generate([requests[i] for i in chunk])
                except RequestFailed as error:
                    answers = [error] * len(chunk)
                for i, answer in zip(chunk, answers):
                    results[i] = answer
        return results  # type: ignore[return-value]

    def _conversation(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from earthvl.images import BadImage, open_image

        out = []
        for message in messages:
            content = message["content"]
            if isinstance(content, list):
                parts = []
                for part in content:
                    if part.get("type") == "image_url":
                        if not self._vision:
                            raise RequestFailed(f"{self.model_name} is a text model; the request holds an image")
                        try:
                            image = open_image(decode_data_url(part["image_url"]["url"]))
                        except BadImage as error:
                            raise RequestFailed(str(error)) from error
                        parts.append({"type": "image", "image": image})
                    else:
                        parts.append(part)
                content = parts
            out.append({**message, "content": content})
        return out

    def _generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        import torch
        from transformers import LogitsProcessorList

        first = requests[0]
        conversations = [self._conversation(r.messages) for r in requests]
        inputs = self._processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            padding=True,
        ).to(self._model.device)
        generate: dict[str, Any] = {"max_new_tokens": first.max_tokens, "do_sample": first.temperature > 0}
        if first.temperature > 0:
            generate["temperature"] = first.temperature
            if first.top_p is not None:
                generate["top_p"] = first.top_p
        if first.json_schema is not None:
            from earthvl.llm.constrained import json_logits_processor

            generate["logits_processor"] = LogitsProcessorList([json_logits_processor(self.tokenizer, first.json_schema)])
        if first.seed is not None:
            torch.manual_seed(first.seed)
        with torch.inference_mode():
            output = self._model.generate(**inputs, **generate, pad_token_id=self.tokenizer.pad_token_id)
        prompt_length, stop_ids = inputs["input_ids"].shape[1], self._stop_ids()
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, used in zip(output[:, prompt_length:], prompt_tokens):
            ids = row.tolist()
            stops = [i for i, token in enumerate(ids) if token in stop_ids]
            kept = ids[: stops[0]] if stops else ids
            results.append(
                ChatResult(
                    text=self.tokenizer.decode(kept, skip_special_tokens=True).strip(),
                    prompt_tokens=int(used),
                    completion_tokens=len(kept) + (1 if stops else 0),
                    model=self.model_name,
                    finish_reason="stop" if stops else "length",
                )
            )
        return results

    def _stop_ids(self) -> set[int]:
        eos = self._model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        return (ids | {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}) - {None}


def make_backend(args: BackendArguments) -> Backend:
    """The backend `args` configure (not `template`, which is a command's own renderer)."""
    if args.backend == "template":
        raise EarthvlError("the template backend is a command's own renderer, not a language model")
    if not args.model:
        raise EarthvlError(f"--model is needed with --backend {args.backend}")
    if args.backend == "openai":
        return OpenAIBackend(args.model, base_url=args.base_url, timeout=args.timeout, max_retries=args.max_retries)
    return TransformersBackend(
        args.model, batch_size=args.batch_size, device=args.device, dtype=args.dtype, trust_remote_code=args.trust_remote_code
    )
