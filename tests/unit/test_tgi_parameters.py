"""TGI's parameter set, each doing what TGI documents, through the real server and model;
and the sampling rules underneath them."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from inference.server import create_app
from tests.unit.test_server import invoke, wait_ready
from training.models.sampling import (
    WATERMARK_GAMMA,
    Rule,
    apply_frequency_penalty,
    apply_presence_penalty,
    apply_watermark,
    green_list,
    green_share,
    sample_rows,
)


@pytest.fixture(scope="module")
def client(tiny_artifact: Path) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_artifact, feedback_store=None)) as c:
        wait_ready(c)
        yield c


def generate(client: TestClient, **params: Any) -> dict[str, Any]:
    answer = invoke(client, {"inputs": "Beautiful is", "parameters": {
        "max_new_tokens": 8, "details": True, **params}})
    assert answer.status_code == 200, answer.text
    [item] = answer.json()
    return dict(item)


def test_best_of_answers_the_likeliest_of_its_sequences(client: TestClient) -> None:
    item = generate(client, best_of=3, do_sample=True)
    details = item["details"]
    others = details["best_of_sequences"]
    assert len(others) == 2
    total = sum(t["logprob"] for t in details["tokens"])
    assert all(total >= sum(t["logprob"] for t in o["tokens"]) for o in others)
    # Each sequence has its own seed, and the chosen one replays alone.
    seeds = {details["seed"], *(o["seed"] for o in others)}
    assert len(seeds) == 3
    again = generate(client, do_sample=True, seed=details["seed"])
    assert again["generated_text"] == item["generated_text"]


def test_decoder_input_details_scores_the_prompt(client: TestClient) -> None:
    prefill = generate(client, decoder_input_details=True)["details"]["prefill"]
    assert prefill[0]["logprob"] is None  # the first token has no context
    assert all(p["logprob"] < 0 for p in prefill[1:])
    assert "".join(p["text"] for p in prefill[1:]) == "Beautiful is"


def test_top_n_tokens_lists_the_likeliest_alternatives(client: TestClient) -> None:
    details = generate(client, top_n_tokens=4)["details"]
    assert len(details["top_tokens"]) == len(details["tokens"])
    for token, top in zip(details["tokens"], details["top_tokens"], strict=True):
        assert len(top) == 4
        logprobs = [t["logprob"] for t in top]
        assert logprobs == sorted(logprobs, reverse=True)
        assert token["id"] == top[0]["id"]  # greedy picks the likeliest


def test_parameters_tgi_accepts_are_accepted(client: TestClient) -> None:
    item = generate(client, typical_p=0.5, watermark=True, frequency_penalty=1.0,
                    presence_penalty=0.5, repetition_penalty=1.2, do_sample=True, seed=1,
                    return_full_text=None, adapter_id=None, grammar=None, top_n_tokens=0)
    assert item["details"]["generated_tokens"] == 8


def test_typical_decoding_keeps_the_tokens_nearest_the_entropy() -> None:
    # Entropy of (0.5, 0.25, 0.125, 0.125) is 1.75 bits; surprises are 1, 2, 3, 3 bits.
    # Nearest the entropy first: token 1 (0.25 away), then 0 (0.75), then 2 and 3.
    logits = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()
    draws = set()
    for seed in range(200):
        gen = torch.Generator().manual_seed(seed)
        draws.add(sample_rows(logits, [Rule(1.0, generator=gen, typical_p=0.2)])[0].id)
    assert draws == {1}
    for seed in range(200):
        gen = torch.Generator().manual_seed(seed)
        draws.add(sample_rows(logits, [Rule(1.0, generator=gen, typical_p=0.7)])[0].id)
    assert draws == {0, 1}


def test_penalties_follow_tgi_and_openai() -> None:
    logits = torch.zeros(5)
    seen = torch.tensor([1, 1, 2, 3])
    freq = apply_frequency_penalty(logits, seen, 2.0)
    assert freq.tolist() == pytest.approx([0.0, -1.0, -0.5, -0.5, 0.0])  # count / length
    presence = apply_presence_penalty(logits, seen, 0.5)
    assert presence.tolist() == [0.0, -0.5, -0.5, -0.5, 0.0]


def test_the_watermark_leans_text_green_and_can_be_detected() -> None:
    vocab, prev = 1000, 17
    green = set(green_list(prev, vocab).tolist())
    assert len(green) == int(vocab * WATERMARK_GAMMA)
    assert green == set(green_list(prev, vocab).tolist())  # recomputable by anyone
    marked = apply_watermark(torch.zeros(vocab), prev)
    assert all(marked[i] > 0 for i in green) and sum(marked > 0) == len(green)
    # Sampled from flat logits with and without the watermark: the marked text is green
    # far above gamma, the unmarked near it.
    gen = torch.Generator().manual_seed(0)
    plain, marked_tokens = [prev], [prev]
    for _ in range(200):
        flat = torch.zeros(1, vocab)
        plain.append(sample_rows(flat, [Rule(1.0, generator=gen)])[0].id)
        biased = apply_watermark(torch.zeros(vocab), marked_tokens[-1])[None]
        marked_tokens.append(sample_rows(biased, [Rule(1.0, generator=gen)])[0].id)
    assert abs(green_share(plain, vocab) - WATERMARK_GAMMA) < 0.12
    assert green_share(marked_tokens, vocab) > 0.8  # e^2 / (e^2 + 1) = 0.88 expected


def test_a_stream_never_splits_a_character(client: TestClient, tiny_artifact: Path) -> None:
    from training.models.formats.tokenizer import IncrementalDecoder, TextTokenizer

    tokenizer = TextTokenizer.from_file(tiny_artifact / "tokenizer.json")
    table = tokenizer.token_bytes()
    assert table is not None  # a byte-level vocabulary
    # Feed "é🙂" byte by byte through single-byte tokens, with a stray continuation byte.
    single = {b[0]: i for i, b in enumerate(table) if len(b) == 1}
    data = "é🙂".encode() + b"\x80" + b"ok"
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(single[byte]) for byte in data]
    assert pieces == ["", "é", "", "", "", "🙂", "", "o", "k"]
    assert decoder.text == "é🙂ok" and "\ufffd" not in decoder.text


def test_streamed_tokens_concatenate_to_the_text(client: TestClient) -> None:
    from tests.unit.test_server import sse_events

    payload = {"inputs": "Flat is", "stream": True,
               "parameters": {"max_new_tokens": 20, "do_sample": True, "seed": 3}}
    events = sse_events(invoke(client, payload).text)
    assert "".join(e["token"]["text"] for e in events) == events[-1]["generated_text"]
    assert all(math.isfinite(e["token"]["logprob"]) for e in events)
