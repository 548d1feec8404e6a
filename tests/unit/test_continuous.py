"""The continuous-batching decode loop and the slot decoders under it."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import pytest
import torch

from inference.continuous import ContinuousBatcher, Sequence
from training.models.decoding import slot_decoder
from training.models.rnn import RNNConfig, RNNSlots, SequenceRNN
from training.models.sampling import SampledToken
from training.models.transformer import GPT, GPTSlots, TransformerConfig

WAIT = 20.0  # a deadline for each wait, never a speed


@pytest.fixture(scope="module")
def gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(TransformerConfig(vocab_size=300, block_size=48, n_layer=2, n_head=2,
                                 n_embd=32)).eval()


@pytest.fixture(scope="module")
def rnn() -> SequenceRNN:
    torch.manual_seed(0)
    return SequenceRNN(RNNConfig(vocab_size=60, seq_len=8, n_embd=8, hidden_size=16,
                                 n_layer=2, max_context=64)).eval()


PROMPTS = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11], [4], [9, 9]]


@pytest.mark.parametrize("model_name", ["gpt", "rnn"])
def test_slots_decode_what_generate_decodes(model_name: str,
                                            request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(model_name)
    alone = [[t.id for t in model.generate(p, max_new_tokens=8, temperature=0.0)]
             for p in PROMPTS]
    decoder = slot_decoder(model, 4)
    # Three prompts of different lengths join in one prefill pass.
    out = [[int(row.argmax())] for row in decoder.prefill(PROMPTS[:3])]
    for _ in range(3):
        logits = decoder.step([o[-1] for o in out])
        for o, row in zip(out, logits, strict=True):
            o.append(int(row.argmax()))
    # The second sequence leaves; a fourth joins mid-way, at its own position.
    done = out.pop(1)
    decoder.remove(1)  # row 2 moves into row 1
    out = [out[0], out[1]]
    out.append([int(decoder.prefill([PROMPTS[3]])[0].argmax())])
    for _ in range(4):
        logits = decoder.step([o[-1] for o in out])
        for o, row in zip(out, logits, strict=True):
            o.append(int(row.argmax()))
    assert done == alone[1][:4]
    assert out[0] == alone[0][:8] and out[1] == alone[2][:8]
    assert out[2] == alone[3][:5]
    assert decoder.active == 3


def test_a_batched_prefill_matches_one_prompt_at_a_time(gpt: GPT) -> None:
    together, alone = GPTSlots(gpt, 4), GPTSlots(gpt, 4)
    logits = together.prefill(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        assert torch.allclose(logits[i], alone.prefill([prompt])[0], atol=1e-5)
    assert together.lengths == [len(p) for p in PROMPTS]
    # Each row's cache holds its own prompt's keys; the next step agrees too.
    assert torch.allclose(together.step([1, 2, 3, 4]), alone.step([1, 2, 3, 4]), atol=1e-5)


def test_slot_room_ends_at_the_context(gpt: GPT) -> None:
    decoder = GPTSlots(gpt, 2)
    decoder.prefill([list(range(46))])
    assert decoder.room(0) == 2
    decoder.step([1])
    assert decoder.room(0) == 1
    rnn_slots = RNNSlots(SequenceRNN(RNNConfig(vocab_size=20, seq_len=4, n_embd=4,
                                               hidden_size=4, n_layer=1, max_context=8)), 1)
    rnn_slots.prefill([[1, 2, 3]])
    assert rnn_slots.room(0) == 5


class Collect:
    """A sequence's callbacks: tokens and the finish reason, with a wait."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.tokens: list[int] = []
        self.reason: str | None = None
        self.finished = threading.Event()
        self.stop_after = stop_after

    def on_token(self, token: SampledToken) -> bool:
        self.tokens.append(token.id)
        return self.stop_after is not None and len(self.tokens) >= self.stop_after

    def on_finish(self, reason: str) -> None:
        self.reason = reason
        self.finished.set()

    def sequence(self, prompt: list[int], n: int, seed: int | None = None,
                 **kw: Any) -> Sequence:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return Sequence(prompt=prompt, max_new_tokens=n, on_token=self.on_token,
                        on_finish=self.on_finish, generator=generator,
                        temperature=1.0 if seed is not None else 0.0, **kw)


def run_alone(model: torch.nn.Module, prompt: list[int], n: int, seed: int | None,
              **kw: Any) -> list[int]:
    loop = ContinuousBatcher(slot_decoder(model, 1))
    try:
        c = Collect()
        loop.submit(c.sequence(prompt, n, seed, **kw))
        assert c.finished.wait(WAIT)
        return c.tokens
    finally:
        loop.close()


@pytest.mark.parametrize("model_name", ["gpt", "rnn"])
def test_seeded_sequences_give_the_same_tokens_alone_and_batched(
        model_name: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(model_name)
    specs = [(p, 6 + 3 * i, seed, kw) for i, (p, seed, kw) in enumerate([
        ([1, 2, 3], 11, {}), ([5, 6, 7, 8], None, {}), ([4], 12, {"top_k": 5}),
        ([9, 9], 13, {"top_p": 0.8, "repetition_penalty": 1.3}), ([7], 14, {}),
        ([3, 1], None, {"repetition_penalty": 1.2})])]
    alone = [run_alone(model, p, n, s, **kw) for p, n, s, kw in specs]
    loop = ContinuousBatcher(slot_decoder(model, 4))  # fewer rows than sequences: some wait
    try:
        collectors = [Collect() for _ in specs]
        for c, (p, n, s, kw) in zip(collectors, specs, strict=True):
            loop.submit(c.sequence(p, n, s, **kw))
        for c in collectors:
            assert c.finished.wait(WAIT)
        assert [c.tokens for c in collectors] == alone
        assert all(c.reason == "length" for c in collectors)
        assert loop.widest == 4  # they really shared steps
    finally:
        loop.close()


def test_a_callback_ends_its_sequence_and_frees_the_row(gpt: GPT) -> None:
    loop = ContinuousBatcher(slot_decoder(gpt, 1))
    try:
        first, second = Collect(stop_after=3), Collect()
        loop.submit(first.sequence([1, 2], 20))
        loop.submit(second.sequence([3], 4))
        assert first.finished.wait(WAIT) and second.finished.wait(WAIT)
        assert first.reason == "stopped" and len(first.tokens) == 3
        assert second.reason == "length" and len(second.tokens) == 4
    finally:
        loop.close()


class SlowSteps:
    """A slot decoder whose steps take a while, so a deadline falls mid-generation."""

    def __init__(self, inner: Any, pause: float) -> None:
        self.inner, self.pause = inner, pause

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def step(self, tokens: list[int]) -> torch.Tensor:
        time.sleep(self.pause)
        return self.inner.step(tokens)  # type: ignore[no-any-return]


def test_deadline_cuts_running_and_waiting_sequences(gpt: GPT) -> None:
    loop = ContinuousBatcher(SlowSteps(slot_decoder(gpt, 1), 0.05))  # type: ignore[arg-type]
    try:
        running, waiting = Collect(), Collect()
        deadline = time.monotonic() + 0.5
        loop.submit(running.sequence([1], 40, deadline=deadline))
        loop.submit(waiting.sequence([2], 5, deadline=deadline))
        assert running.finished.wait(WAIT) and waiting.finished.wait(WAIT)
        assert running.reason == "deadline" and 0 < len(running.tokens) < 40
        assert waiting.reason == "deadline" and waiting.tokens == []
    finally:
        loop.close()


def test_cancelled_sequence_leaves_the_batch(gpt: GPT) -> None:
    loop = ContinuousBatcher(SlowSteps(slot_decoder(gpt, 2), 0.02))  # type: ignore[arg-type]
    try:
        gone, stays = Collect(), Collect()
        seq = gone.sequence([1], 40)
        loop.submit(seq)
        loop.submit(stays.sequence([2], 10))
        deadline = time.monotonic() + WAIT
        while len(gone.tokens) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        seq.cancelled.set()
        assert gone.finished.wait(WAIT) and stays.finished.wait(WAIT)
        assert gone.reason == "cancelled" and len(gone.tokens) < 40
        assert stays.reason == "length" and len(stays.tokens) == 10
    finally:
        loop.close()


def test_close_finishes_what_is_left(gpt: GPT) -> None:
    loop = ContinuousBatcher(SlowSteps(slot_decoder(gpt, 1), 0.05))  # type: ignore[arg-type]
    reasons: queue.Queue[str] = queue.Queue()
    for prompt in ([1], [2]):
        loop.submit(Sequence(prompt=prompt, max_new_tokens=40, on_token=lambda t: False,
                             on_finish=reasons.put))
    time.sleep(0.1)
    loop.close()
    assert sorted(reasons.get(timeout=WAIT) for _ in range(2)) == ["shutdown", "shutdown"]
    late = Collect()
    loop.submit(late.sequence([3], 2))
    assert late.reason == "shutdown"
