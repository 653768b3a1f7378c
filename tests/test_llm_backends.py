"""The shared LLM layer against real servers: `transformers serve` with the tiny LLaVA, and a fake endpoint for
429/500/slow/truncated/non-JSON answers and a refused key. The openai client is never patched."""

import io
import json
import time

import pytest
from fake_http import closed_port
from llm_servers import chat_route, completion_body, sent_requests
from PIL import Image

from earthvl.llm.backends import (
    BackendUnusable,
    ChatRequest,
    OpenAIBackend,
    RequestFailed,
    TransformersBackend,
    image_data_url,
    make_backend,
    retry_after_seconds,
)
from earthvl.llm.cache import ResultCache, cache_key
from earthvl.llm.options import BackendArguments
from earthvl.llm.runner import Job, run_jobs
from earthvl.model_names import resolve_model

HELLO = ChatRequest(messages=[{"role": "user", "content": "hello"}], max_tokens=8)


def backend(url, **kw):
    return OpenAIBackend("fake", base_url=url, **{"timeout": 5.0, "max_retries": 2, "backoff": 0.01, **kw})


def png_url(color=(0, 0, 255)):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, "PNG")
    return image_data_url(buf.getvalue())


def test_answer_and_tokens_come_back(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    url = chat_route(server, "water everywhere", prompt_tokens=40, completion_tokens=5)
    result = backend(url).chat(HELLO)
    assert (result.text, result.prompt_tokens, result.completion_tokens, result.finish_reason) == (
        "water everywhere", 40, 5, "stop"
    )
    assert sent_requests(server)[0]["messages"] == HELLO.messages
    assert sent_requests(server)[0]["max_tokens"] == 8


def test_429_waits_as_long_as_retry_after_says(server):
    url = chat_route(server, script=["429"], retry_after="1")
    start = time.monotonic()
    assert backend(url).chat(HELLO).text == "an answer"
    assert time.monotonic() - start >= 0.9
    assert server.hits["/v1/chat/completions"] == 2


def test_500s_are_retried_then_reported(server):
    url = chat_route(server, script=["500", "500"])
    assert backend(url, max_retries=2).chat(HELLO).text == "an answer"
    server.hits.clear()
    chat_route(server, script=["500", "500", "500"])
    with pytest.raises(RequestFailed, match="HTTP 500 after 2 tries"):
        backend(url, max_retries=1).chat(HELLO)
    assert server.hits["/v1/chat/completions"] == 2


def test_backoff_without_retry_after_doubles_with_up_to_a_second_of_jitter_through_current_tenacity():
    import warnings

    from tenacity import RetryCallState

    from earthvl.llm.backends import MAX_RETRY_WAIT

    waits = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # no deprecated tenacity call
        for attempt in (1, 2, 3, 30):
            state = RetryCallState(None, None, (), {})
            state.attempt_number = attempt
            state.set_exception((ConnectionError, ConnectionError("down"), None))
            waits.append(backend("http://127.0.0.1:9", backoff=0.5)._wait(state))
    for wait, low in zip(waits, (0.5, 1.0, 2.0)):
        assert low <= wait <= low + 1.0
    assert waits[-1] == MAX_RETRY_WAIT


def test_slow_answers_time_out_per_try(server):
    url = chat_route(server, script=["slow", "slow"])
    with pytest.raises(RequestFailed, match=r"timed out \(0.2 s per try\) after 2 tries"):
        backend(url, timeout=0.2, max_retries=1).chat(HELLO)
    server.hits.clear()
    chat_route(server, script=["slow"])
    assert backend(url, timeout=0.2, max_retries=1).chat(HELLO).text == "an answer"


def test_truncated_and_non_json_answers_fail_that_request(server):
    url = chat_route(server, script=["truncate"])
    with pytest.raises(RequestFailed, match="connection broken after 1 tries"):
        backend(url, max_retries=0).chat(HELLO)
    chat_route(server, body=b"<html>proxy error</html>", content_type="text/html")
    with pytest.raises(RequestFailed, match="not a chat completion"):
        backend(url, max_retries=0).chat(HELLO)
    chat_route(server, body=b'{"choices": []}')
    with pytest.raises(RequestFailed, match="no choices"):
        backend(url, max_retries=0).chat(HELLO)


def test_an_answer_trickled_byte_by_byte_times_out_after_the_timeout_in_all(server):
    url = chat_route(server, trickle=0.02)  # each byte well within the timeout; the whole answer takes seconds
    with pytest.raises(RequestFailed, match=r"timed out \(0.5 s per try\) after 1 tries"):
        backend(url, timeout=0.5, max_retries=0).chat(HELLO)


def test_answers_that_are_not_text_fail_that_request(server):
    url = chat_route(server, body=completion_body(123))
    with pytest.raises(RequestFailed, match="the message content is int, not text"):
        backend(url, max_retries=0).chat(HELLO)
    chat_route(server, body=completion_body(["a", "list"]))
    with pytest.raises(RequestFailed, match="the message content is list, not text"):
        backend(url, max_retries=0).chat(HELLO)
    chat_route(server, body=completion_body("a lone \ud800 surrogate"))
    with pytest.raises(RequestFailed, match="not valid Unicode"):
        backend(url, max_retries=0).chat(HELLO)
    chat_route(server, body=completion_body("fine").replace(b'"prompt_tokens": 11', b'"prompt_tokens": "lots"'))
    with pytest.raises(RequestFailed, match="usage.prompt_tokens is 'lots', not a count"):
        backend(url, max_retries=0).chat(HELLO)
    chat_route(server, body=b"{not json", content_type="application/json")
    with pytest.raises(RequestFailed, match="not a chat completion: Expecting property name"):
        backend(url, max_retries=0).chat(HELLO)


def test_the_key_and_the_urls_credentials_never_reach_messages_or_settings(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-key")
    echo = b'{"error": {"message": "bad request from Bearer sk-very-secret-key, user me:hunter2, q=tok-secret"}}'
    url = chat_route(server, status=400, body=echo)
    with pytest.raises(RequestFailed) as failed:
        backend(url).chat(HELLO)
    assert "Bearer ***" in str(failed.value) and "sk-very-secret-key" not in str(failed.value)
    with_credentials = url.replace("http://", "http://me:hunter2@") + "?api-key=tok-secret"
    chat_route(server, status=404, body=echo)
    with pytest.raises(BackendUnusable) as unusable:
        backend(with_credentials).chat(HELLO)
    shown = str(unusable.value) + json.dumps(backend(with_credentials).settings())
    assert url in shown and not any(secret in shown for secret in ("sk-very", "hunter2", "tok-secret"))


def test_a_refused_key_stops_without_showing_the_key(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-key")
    url = chat_route(server, status=401, body=b'{"error": {"message": "Incorrect API key sk-very-secret-key"}}')
    with pytest.raises(BackendUnusable) as error:
        backend(url).chat(HELLO)
    assert "HTTP 401" in str(error.value) and "secret" not in str(error.value)
    assert server.hits["/v1/chat/completions"] == 1


def test_an_unreachable_endpoint_is_unusable():
    with pytest.raises(BackendUnusable, match="cannot reach"):
        backend(f"http://127.0.0.1:{closed_port()}/v1", max_retries=0).chat(HELLO)


def test_no_key_and_no_endpoint_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BackendUnusable, match="OPENAI_API_KEY"):
        make_backend(BackendArguments(backend="openai", model="gpt-4o"))


def test_structured_output_is_asked_for_with_the_schema(server):
    url = chat_route(server, '{"a": "b"}')
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    backend(url).chat(ChatRequest(messages=HELLO.messages, json_schema=schema, schema_name="thing", seed=3))
    sent = sent_requests(server)[0]
    assert sent["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}
    }
    assert sent["seed"] == 3


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def jobs(n, prefix="r", max_tokens=4):
    return [
        Job(f"{prefix}{i}", cache_key({"i": i, "prefix": prefix}),
            ChatRequest(messages=[{"role": "user", "content": f"q{i}"}], max_tokens=max_tokens))
        for i in range(n)
    ]


def test_runner_accounts_stops_at_max_requests_and_resumes_from_the_cache(server, tmp_path):
    url = chat_route(server, "ok", prompt_tokens=100, completion_tokens=10)
    options = BackendArguments(backend="openai", concurrency=3, max_requests=4, price_per_1k_input=1.0,
                               price_per_1k_output=2.0)
    with ResultCache(tmp_path / "cache.jsonl") as cache:
        values, acc = run_jobs(backend(url), jobs(10), cache, options, progress=False)
    assert (acc.requests, acc.answered, acc.not_run, acc.stopped_by) == (4, 4, 6, "max_requests")
    assert (acc.prompt_tokens, acc.completion_tokens) == (400, 40)
    assert acc.cost == pytest.approx(4 * (0.1 + 0.02))
    assert len(values) == 4 and set(values.values()) == {"ok"}
    options.max_requests = None
    with ResultCache(tmp_path / "cache.jsonl") as cache:
        values, acc = run_jobs(backend(url), jobs(10), cache, options, progress=False)
    assert (acc.cached, acc.requests, acc.answered) == (4, 6, 6)
    assert server.hits["/v1/chat/completions"] == 10 and len(values) == 10


def test_runner_stops_at_the_budget(server, tmp_path):
    url = chat_route(server, "ok", prompt_tokens=1000, completion_tokens=0)
    options = BackendArguments(backend="openai", concurrency=1, budget=2.5, price_per_1k=1.0)
    with ResultCache(tmp_path / "c.jsonl") as cache:
        _, acc = run_jobs(backend(url), jobs(10), cache, options, progress=False)
    assert (acc.requests, acc.cost, acc.stopped_by, acc.not_run) == (3, 3.0, "budget", 7)


def test_failures_are_recorded_and_retried_on_the_next_run(server, tmp_path):
    url = chat_route(server, "ok", script=["500"])
    options = BackendArguments(backend="openai", concurrency=1)

    def parse(result):
        if result.text != "ok":
            raise ValueError(f"expected ok, got {result.text!r}")
        return result.text

    with ResultCache(tmp_path / "c.jsonl") as cache:
        _, acc = run_jobs(backend(url, max_retries=0), jobs(2), cache, options, progress=False, parse=parse)
        assert acc.failures == [{"record": "r0", "reason": "HTTP 500 after 1 tries"}] and acc.answered == 1
        assert cache.failure(jobs(2)[0].key) == "HTTP 500 after 1 tries"
    with ResultCache(tmp_path / "c.jsonl") as cache:
        _, acc = run_jobs(backend(url, max_retries=0), jobs(2), cache, options, progress=False, parse=parse)
    assert (acc.cached, acc.requests, acc.failed) == (1, 1, 0)
    chat_route(server, "not ok")
    with ResultCache(tmp_path / "c2.jsonl") as cache:
        _, acc = run_jobs(backend(url), jobs(1), cache, options, progress=False, parse=parse)
    assert acc.failures == [{"record": "r0", "reason": "unusable answer: expected ok, got 'not ok'"}]


def test_an_unusable_backend_stops_the_run_after_caching_what_was_answered(server, tmp_path):
    url = chat_route(server, status=401, body=b"{}")
    with ResultCache(tmp_path / "c.jsonl") as cache, pytest.raises(BackendUnusable):
        run_jobs(backend(url), jobs(5), cache, BackendArguments(backend="openai", concurrency=2), progress=False)
    assert server.hits["/v1/chat/completions"] <= 2


def test_cache_ignores_a_line_cut_short(tmp_path):
    path = tmp_path / "c.jsonl"
    with ResultCache(path) as cache:
        cache.put("k1", "a", {"value": 1})
    with path.open("a") as f:
        f.write('{"key": "k2", "ok": tr')
    cache = ResultCache(path)
    assert cache.get("k1") == {"value": 1} and cache.get("k2") is None and cache.unreadable_lines == 1
    cache.close()


def test_a_garbled_or_tampered_cache_is_asked_again(server, tmp_path):
    url = chat_route(server, "fresh")
    path = tmp_path / "c.jsonl"
    first, second, third = (job.key for job in jobs(3))
    entries = [{"key": first, "ok": True, "answer": "not an object"},
               {"key": second, "ok": True, "answer": {"result": {"text": 5}}},
               {"key": third, "ok": True, "answer": {"result": {"text": "", "prompt_tokens": 1, "completion_tokens": 1,
                                                                "model": "m", "finish_reason": "stop"}}}]
    path.write_bytes(b"\xff\xfe not UTF-8\n" + b"".join(json.dumps(e).encode() + b"\n" for e in entries))

    def parse(result):
        if not result.text:
            raise ValueError("empty answer")
        return result.text

    with ResultCache(path) as cache:
        assert cache.unreadable_lines == 2
        values, acc = run_jobs(backend(url), jobs(3), cache, BackendArguments(backend="openai"), progress=False,
                               parse=parse)
    assert (acc.cached, acc.requests) == (0, 3) and list(values.values()) == ["fresh"] * 3


def test_cache_key_is_order_independent():
    assert cache_key({"a": 1, "b": [2]}) == cache_key({"b": [2], "a": 1}) != cache_key({"a": 1, "b": [3]})


@pytest.mark.slow
def test_openai_backend_against_transformers_serve(transformers_server, tmp_path):
    """A real OpenAI-compatible server: text and data-URL image requests, token usage, the runner."""
    real = OpenAIBackend(transformers_server.model, base_url=transformers_server.base_url, timeout=60)
    text = real.chat(ChatRequest(messages=[{"role": "user", "content": "describe the land cover"}], max_tokens=6))
    assert text.prompt_tokens > 3 and 1 <= text.completion_tokens <= 6 and isinstance(text.text, str)
    image = ChatRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": "describe"},
                                               {"type": "image_url", "image_url": {"url": png_url()}}]}],
        max_tokens=4,
    )
    with_image = real.chat(image)
    assert with_image.prompt_tokens > text.prompt_tokens  # the image's tokens count
    options = BackendArguments(backend="openai", concurrency=2)
    with ResultCache(tmp_path / "c.jsonl") as cache:
        values, acc = run_jobs(real, jobs(3), cache, options, progress=False)
    assert (acc.answered, acc.failed, len(values)) == (3, 0, 3)


@pytest.mark.slow
def test_transformers_backend_batches_a_local_vlm():
    local = TransformersBackend(resolve_model("tiny-llava"), batch_size=2, device="cpu")
    requests = [
        ChatRequest(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": png_url(c)}},
                                                           {"type": "text", "text": "describe"}]}], max_tokens=5)
        for c in ((0, 0, 255), (255, 0, 0), (0, 255, 0))
    ] + [ChatRequest(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]}])]
    results = local.chat_batch(requests)
    assert all(r.prompt_tokens > 10 and 1 <= r.completion_tokens <= 5 for r in results[:3])
    assert isinstance(results[3], RequestFailed) and "data: URLs" in str(results[3])
    assert local.settings() == {"backend": "transformers", "model": resolve_model("tiny-llava"), "dtype": "auto"}


def test_a_rejected_request_fails_with_the_servers_reason(server):
    url = chat_route(server, status=400, body=b'{"detail": "prompt of 815 tokens is longer than 512"}')
    with pytest.raises(RequestFailed, match="HTTP 400: .*prompt of 815 tokens is longer than 512"):
        backend(url).chat(HELLO)
    assert server.hits["/v1/chat/completions"] == 1  # a 400 is not retried
