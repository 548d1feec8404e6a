"""A property-based fuzz of the whole request path against the real server process: no
request, however malformed, hostile or oversized, gets a 5xx, a stack trace or a frozen
server. A second thread pings throughout, as SageMaker's health check does (2 s timeout).

The count is bounded (GENKILN_FUZZ_EXAMPLES, 400 by default; the closing notes quote runs
of 10,000) and the draw is derandomized, so a failure replays. Run it with `-s` to see the
answers by status and the pings' latency."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.servers import serving

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("GENKILN_FUZZ_EXAMPLES", "400"))
PING_TIMEOUT = 2.0  # SageMaker's: a ping slower than this fails the health check

# Strings with what breaks naive servers: lone surrogates, NUL, bidi marks, emoji, long runs.
NASTY = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec=None, categories=("Cs", "Cc", "Co", "So", "Zl", "Zp")),
            max_size=10),
    st.sampled_from(["", " ", "\x00", "\ud800", "\udfff", "\u202e", "🙂", "東京", "\\u0000",
                     "a" * 5000, "<|endoftext|>", "{{ 7*7 }}", "{% for x in y %}"]),
)
NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1, 2**63, 2**64 + 1, 10**100, 0.5, 1e308, -0.0]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, NASTY)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(NASTY, inner, max_size=5)), max_leaves=25)

PARAMETER_NAMES = ["max_new_tokens", "temperature", "top_k", "top_p", "typical_p", "seed",
                   "do_sample", "best_of", "details", "decoder_input_details",
                   "top_n_tokens", "watermark", "stop", "truncate", "repetition_penalty",
                   "frequency_penalty", "presence_penalty", "return_full_text", "grammar",
                   "adapter_id", "sagemaker_base_url"]
SENSIBLE = {"max_new_tokens": st.integers(0, 60), "temperature": st.floats(0, 3),
            "top_k": st.integers(0, 300), "top_p": st.floats(0, 1.2),
            "typical_p": st.floats(0, 1.2), "seed": st.integers(-1, 2**64),
            "do_sample": st.booleans(), "best_of": st.integers(0, 5),
            "details": st.booleans(), "decoder_input_details": st.booleans(),
            "top_n_tokens": st.integers(-1, 6), "watermark": st.booleans(),
            "stop": st.lists(NASTY, max_size=9), "truncate": st.integers(-1, 60),
            "repetition_penalty": st.floats(0, 11), "frequency_penalty": st.floats(-3, 3),
            "presence_penalty": st.floats(-3, 3), "return_full_text": st.booleans()}


def parameter(name: str) -> st.SearchStrategy[Any]:
    sensible = SENSIBLE.get(name)
    return st.one_of(sensible, SCALARS) if sensible is not None else JSON


PARAMETERS = st.lists(st.sampled_from(PARAMETER_NAMES), max_size=6, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({n: parameter(n) for n in names}))
PROMPTS = st.one_of(NASTY, st.lists(NASTY, max_size=4), SCALARS)
MESSAGES = st.lists(st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "system", "assistant"]), NASTY),
     "content": st.one_of(NASTY, st.lists(st.fixed_dictionaries(
         {"type": st.sampled_from(["text", "image_url"]), "text": NASTY}), max_size=2),
         st.none())}), max_size=4)

PLAUSIBLE = st.lists(st.sampled_from(sorted(SENSIBLE)), max_size=5, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({n: SENSIBLE[n] for n in names}))

BODIES = st.one_of(
    st.fixed_dictionaries({"inputs": st.text(max_size=30), "parameters": PLAUSIBLE,
                           "stream": st.booleans()}),
    st.fixed_dictionaries({"inputs": PROMPTS, "parameters": PARAMETERS,
                           "stream": st.booleans()}),
    st.fixed_dictionaries({"messages": MESSAGES, "max_tokens": st.integers(-1, 60),
                           "stream": st.booleans(), "seed": st.integers(0, 9)},
                          optional={"n": st.integers(0, 5), "temperature": NUMBERS,
                                    "logprobs": st.booleans(),
                                    "top_logprobs": st.integers(-1, 7),
                                    "tools": JSON, "response_format": JSON,
                                    "stop": st.one_of(NASTY, st.lists(NASTY, max_size=9))}),
    st.fixed_dictionaries({"prompt": PROMPTS, "max_tokens": st.integers(-1, 60),
                           "stream": st.booleans()},
                          optional={"n": st.integers(0, 5), "echo": st.booleans(),
                                    "logprobs": st.integers(-1, 7), "suffix": NASTY}),
    st.fixed_dictionaries({"feedback": st.one_of(JSON, st.fixed_dictionaries(
        {}, optional={"generation_id": NASTY, "rating": NUMBERS, "chosen": NASTY,
                      "rejected": NASTY, "comment": NASTY, "feedback_id": NASTY,
                      "created": NASTY}))}),
    st.just({"info": {}}),
    JSON,
)


def encoded(body: Any, how: str) -> bytes:
    if how == "ascii":  # lone surrogates travel as \udXXX escapes
        return json.dumps(body).encode()
    if how == "utf8":
        return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    text = json.dumps(body)
    if how == "truncated":
        return text[: len(text) // 2].encode()
    if how == "nan":
        return text.replace("0", "NaN", 1).encode()
    return b"[" * 100_000  # "deep"


REQUESTS = st.tuples(
    BODIES,
    st.sampled_from(["ascii"] * 6 + ["utf8", "utf8", "truncated", "nan", "deep"]),
    st.sampled_from(["/invocations", "/invocations", "/", "/generate", "/generate_stream",
                     "/v1/chat/completions", "/v1/completions"]),
    st.sampled_from(["application/json"] * 6 + ["application/json; charset=utf-8",
                                                 "text/plain", "*/*", "text/csv",
                                                 "application/x-www-form-urlencoded"]),
    st.sampled_from([None, "*/*", "text/event-stream", "application/jsonlines",
                     "image/png", "audio/midi", "application/json"]),
    st.one_of(st.none(), st.none(), st.none(), st.sampled_from(["fz-1", "bad id!", "x" * 200]),
              st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")),
)


class Pinger(threading.Thread):
    """GET /ping every 20 ms for as long as the fuzz runs; every latency, every failure."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.latencies, self.failures = url, [], []  # type: ignore[var-annotated]
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=PING_TIMEOUT) as client:
            while not self.stopped.is_set():
                started = time.perf_counter()
                try:
                    status = client.get(f"{self.url}/ping").status_code
                    if status != 200:
                        self.failures.append(f"status {status}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self.latencies.append(time.perf_counter() - started)
                self.stopped.wait(0.02)


@pytest.fixture(scope="module")
def url(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {**os.environ, "GENKILN_FEEDBACK_DIR": str(tmp_path_factory.mktemp("fuzz-records"))}
    with serving(tiny_artifact, env=env) as served:
        yield served.url


def test_no_request_gets_a_5xx_or_stalls_the_health_check(url: str) -> None:
    statuses: Counter[int] = Counter()
    client = httpx.Client(base_url=url, timeout=70)
    pinger = Pinger(url)
    pinger.start()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(REQUESTS)
    def one(request: tuple[Any, ...]) -> None:
        body, how, path, content_type, accept, inference_id = request
        headers = {"Content-Type": content_type}
        if accept is not None:
            headers["Accept"] = accept
        if inference_id is not None:
            headers["X-Amzn-SageMaker-Inference-Id"] = inference_id
        with client.stream("POST", path, content=encoded(body, how), headers=headers) as answer:
            data = answer.read()
        statuses[answer.status_code] += 1
        assert answer.status_code < 500, (path, body, data[:500])
        assert b"Traceback" not in data
        if answer.status_code >= 400:
            error = json.loads(data)
            assert isinstance(error, dict) and "error" in error, data[:500]
        elif answer.headers["content-type"].startswith("text/event-stream"):
            events = [e for e in data.split(b"\n\n") if e]
            assert events and all(e.startswith(b"data:") for e in events), data[:500]
            last = events[-1]
            if last == b"data: [DONE]":  # OpenAI's close, after its final chunk
                last = events[-2]
            final = json.loads(last[len(b"data:"):])
            assert "error" in final or final.get("details") or final.get("choices") is not None

    try:
        one()
    finally:
        pinger.stopped.set()
        pinger.join(5)
        client.close()
    latencies = sorted(pinger.latencies)
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(f"\nfuzz: {sum(statuses.values())} requests by status {dict(sorted(statuses.items()))}; "
          f"{len(latencies)} pings: median {statistics.median(latencies) * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert not pinger.failures, pinger.failures[:5]
    assert statuses[200] > 0 and any(400 <= s < 500 for s in statuses)
