"""The scheduler: admission (429), deadlines, and text requests through the decode loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from inference.errors import ClientError
from inference.handlers import load_handler
from inference.handlers.transformer import TextGenerationHandler
from inference.scheduler import Mailbox, Scheduler
from inference.server import create_app
from inference.settings import ServingSettings
from training.artifact import load_artifact

WAIT = 30.0


@pytest.fixture(scope="module")
def handler(tiny_artifact: Path) -> TextGenerationHandler:
    loaded = load_handler(load_artifact(tiny_artifact))
    assert isinstance(loaded, TextGenerationHandler)
    return loaded


def slow_steps(scheduler: Scheduler, pause: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every decode step take ``pause`` seconds, so requests overlap and deadlines
    fall mid-generation."""
    decoder = scheduler.decode_loop.decoder
    real = decoder.step

    def step(tokens: list[int]) -> torch.Tensor:
        time.sleep(pause)
        return real(tokens)  # type: ignore[no-any-return]

    monkeypatch.setattr(decoder, "step", step)


def request(handler: TextGenerationHandler, prompt: str, *, stream: bool = False,
            **params: Any) -> Any:
    return handler.decode({"inputs": prompt, "stream": stream, "parameters": params})


def test_one_request_over_the_limit_is_429(handler: TextGenerationHandler,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = Scheduler(handler, ServingSettings(max_concurrent_requests=2))
    slow_steps(scheduler, 0.02, monkeypatch)

    async def scenario() -> tuple[list[Any], ClientError]:
        streams = [scheduler.stream(request(handler, f"p{i}", stream=True,
                                            max_new_tokens=20)) for i in range(2)]
        firsts = [await anext(s) for s in streams]  # both admitted and decoding
        with pytest.raises(ClientError) as refused:
            await scheduler.predict(request(handler, "third", max_new_tokens=2))
        assert scheduler.in_flight == 2
        rest = [[e async for e in s] for s in streams]
        return [[f, *r] for f, r in zip(firsts, rest, strict=True)], refused.value

    try:
        streams, refused = asyncio.run(scenario())
    finally:
        scheduler.close()
    assert refused.status == 429 and refused.error_type == "overloaded"
    assert "GENKILN_MAX_CONCURRENT_REQUESTS" in refused.message
    assert all(s[-1]["details"]["finish_reason"] == "length" and len(s) == 20
               for s in streams)
    assert scheduler.in_flight == 0  # both released once they ended


def test_deadline_ends_a_stream_with_a_final_event(handler: TextGenerationHandler,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = Scheduler(handler, ServingSettings(request_timeout_s=0.4))
    slow_steps(scheduler, 0.05, monkeypatch)

    async def scenario() -> tuple[list[Any], Any]:
        events = [e async for e in scheduler.stream(
            request(handler, "a", stream=True, max_new_tokens=40, details=True))]
        whole = await scheduler.predict(request(handler, "b", max_new_tokens=40,
                                                details=True))
        return events, whole

    try:
        events, whole = asyncio.run(scenario())
    finally:
        scheduler.close()
    final = events[-1]
    assert final["details"]["finish_reason"] == "deadline"
    assert 0 < final["details"]["generated_tokens"] == len(events) < 40
    assert final["generated_text"] == "".join(e["token"]["text"] for e in events)
    assert whole[0]["details"]["finish_reason"] == "deadline"


@pytest.mark.slow
def test_request_that_cannot_start_in_time_is_503(handler: TextGenerationHandler,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Batching off: one request at a time, so the second waits behind the first.
    scheduler = Scheduler(handler, ServingSettings(batching=False))
    slow_steps(scheduler, 0.05, monkeypatch)

    async def scenario() -> tuple[Any, BaseException | Any]:
        first = asyncio.ensure_future(scheduler.predict(request(handler, "a",
                                                                max_new_tokens=20,
                                                                details=True)))
        await asyncio.sleep(0.01)
        # Requests from now on get 0.3 s: the second's deadline passes while it waits.
        scheduler.settings = ServingSettings(batching=False, request_timeout_s=0.3)
        second = await asyncio.gather(
            scheduler.predict(request(handler, "b", max_new_tokens=40)),
            return_exceptions=True)
        return await first, second[0]

    try:
        first, second = asyncio.run(scenario())
    finally:
        scheduler.close()
    assert first[0]["details"]["finish_reason"] in {"length", "eos_token"}
    assert isinstance(second, ClientError) and second.status == 503
    assert "GENKILN_REQUEST_TIMEOUT_SECONDS" in second.message


@pytest.fixture(scope="module")
def batched(tiny_artifact: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_artifact, settings=ServingSettings(max_batch_size=4))) as c:
        deadline = time.monotonic() + WAIT
        while c.get("/ping").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield c


def test_a_list_of_prompts_is_decoded_together(batched: TestClient) -> None:
    params = {"max_new_tokens": 8, "do_sample": True, "seed": 4}
    prompts = ["a", "bb", "ccc", "dddd", "eeeee"]
    scheduler = batched.app.state.model.scheduler  # type: ignore[attr-defined]
    together = batched.post("/invocations", content=json.dumps(
        {"inputs": prompts, "parameters": params})).json()
    alone = [batched.post("/invocations", content=json.dumps(
        {"inputs": p, "parameters": params})).json()[0] for p in prompts]
    for answers in (together, alone):  # each answer names its own generation
        assert len({a.pop("generation_id") for a in answers}) == len(prompts)
    assert together == alone
    assert scheduler.decode_loop.widest == 4  # four rows, five prompts: all rows used


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENKILN_MAX_CONCURRENT_REQUESTS", "7")
    monkeypatch.setenv("GENKILN_BATCHING", "off")
    monkeypatch.setenv("GENKILN_REQUEST_TIMEOUT_SECONDS", "20")
    settings = ServingSettings.from_env()
    assert settings.max_concurrent_requests == 7 and settings.decode_slots == 1
    assert settings.request_timeout_s == 20
    monkeypatch.setenv("GENKILN_MAX_BATCH_SIZE", "many")
    with pytest.raises(ValueError, match="GENKILN_MAX_BATCH_SIZE='many' is not a number"):
        ServingSettings.from_env()
    monkeypatch.delenv("GENKILN_MAX_BATCH_SIZE")
    monkeypatch.setenv("GENKILN_SERVING_PRECISION", "fp8")
    with pytest.raises(ValueError, match="set it to one of fp32, bf16, int8"):
        ServingSettings.from_env()


def test_the_mailbox_delivers_in_order_with_one_wake_up_per_burst() -> None:
    wake_ups = 0

    async def main() -> list[list[int]]:
        nonlocal wake_ups
        loop = asyncio.get_running_loop()
        mailbox = Mailbox(loop)
        real = loop.call_soon_threadsafe

        def counted(*args: Any) -> Any:
            nonlocal wake_ups
            wake_ups += 1
            return real(*args)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        queues: list[asyncio.Queue[int]] = [asyncio.Queue(), asyncio.Queue()]

        def burst(start: int) -> None:  # a decode step: a token for every stream
            for i in range(start, start + 50):
                mailbox.post(queues[i % 2], i)

        # The loop is busy (blocked here) while each burst is posted, as it may be
        # while the decode thread steps.
        for start in (0, 50):
            poster = threading.Thread(target=burst, args=(start,))
            poster.start()
            poster.join()
            await asyncio.sleep(0)
        return [[q.get_nowait() for _ in range(q.qsize())] for q in queues]

    evens, odds = asyncio.run(main())
    assert evens == list(range(0, 100, 2)) and odds == list(range(1, 100, 2))
    assert wake_ups == 2
