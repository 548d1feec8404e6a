import json
import math
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY
from training.entry import run_training
from training.local import emulate_opt_ml
from training.models.sampling import sample_next
from training.models.transformer import GPT, GPTSlots, TransformerConfig

CFG = TransformerConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CFG).eval()


def test_shapes_and_loss(model: GPT) -> None:
    idx = torch.randint(0, CFG.vocab_size, (3, 16))
    logits, loss = model(idx, targets=idx)
    assert logits.shape == (3, 16, CFG.vocab_size)
    assert loss is not None and loss.ndim == 0
    # Untrained, the loss is close to uniform guessing: ln(vocab).
    assert abs(loss.item() - torch.log(torch.tensor(300.0)).item()) < 0.5
    last, none = model(idx)
    assert last.shape == (3, 1, CFG.vocab_size) and none is None


def test_weights_are_tied(model: GPT) -> None:
    assert model.lm_head.weight.data_ptr() == model.wte.weight.data_ptr()


@pytest.mark.parametrize(("batch", "bias"), [(1, False), (3, True)])
def test_cached_decoding_matches_full_forward(batch: int, bias: bool) -> None:
    torch.manual_seed(1)
    cfg = TransformerConfig(**{**CFG.__dict__, "bias": bias})
    model = GPT(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (batch, 12))
    full, _ = model(idx, targets=idx)  # (B, 12, vocab): the training form
    decoder = GPTSlots(model, batch)  # the serving form
    first = decoder.prefill(idx[:, :8].tolist())
    assert torch.allclose(first, full[:, 7], atol=1e-5)
    for t in range(8, 12):  # one position at a time
        step = decoder.step(idx[:, t].tolist())
        assert step.shape == (batch, cfg.vocab_size)
        assert torch.allclose(step, full[:, t], atol=1e-5)
    assert decoder.lengths == [12] * batch


def test_seeded_sampling_is_reproducible(model: GPT) -> None:
    def run(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return [t.id for t in model.generate([1, 2, 3], max_new_tokens=20, temperature=1.5,
                                             generator=gen)]
    assert run(11) == run(11)
    assert run(11) != run(12)


def test_greedy_is_argmax(model: GPT) -> None:
    tokens = list(model.generate([5, 6], max_new_tokens=3, temperature=0.0))
    logits, _ = model(torch.tensor([[5, 6]]))
    assert tokens[0].id == int(logits[0, -1].argmax())


def test_top_k_and_top_p_restrict_the_support() -> None:
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    picks = {sample_next(logits, temperature=5.0, top_k=2, top_p=None, generator=gen).id
             for _ in range(200)}
    assert picks == {0, 1}
    # probs ~ [.64, .24, .09, .03, .01]: top_p .8 keeps the first two only.
    picks = {sample_next(logits, temperature=1.0, top_k=None, top_p=0.8, generator=gen).id
             for _ in range(300)}
    assert picks == {0, 1}


def test_context_overflow_is_refused(model: GPT) -> None:
    with pytest.raises(ValueError, match="exceeds block_size 32"):
        list(model.generate(list(range(30)), max_new_tokens=5))


def test_a_short_run_beats_untrained_weights(tmp_path: Path, text_dir: Path) -> None:
    # Untrained, held-out loss sits at ln(vocab) (test_shapes_and_loss); 40 steps on the
    # Zen of Python must do clearly better. A quality assertion, not a timed one.
    opt_ml = emulate_opt_ml(tmp_path, data=text_dir, hyperparameters={
        **TINY, "max_steps": "40", "learning_rate": "0.005", "eval_interval": "40"})
    assert run_training(opt_ml) == 0, opt_ml.failure_path.read_text()
    manifest = json.loads((opt_ml.model_dir / "genkiln.json").read_text())
    untrained = math.log(manifest["model_args"]["vocab_size"])
    assert manifest["metrics"]["val_loss"] < untrained - 1.0
