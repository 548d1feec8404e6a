from pathlib import Path

import pytest

from tests.conftest import ZEN
from training.models.formats.tokenizer import END_OF_TEXT, IncrementalDecoder, TextTokenizer


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train([ZEN] * 3, vocab_size=320)


@pytest.mark.parametrize("text", [
    "Beautiful is better than ugly.",
    "never seen: Zürich ☃ 東京 🙂\ttabs\n\nnewlines",
    "",
])
def test_round_trip_is_exact(tokenizer: TextTokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_learns_merges_and_keeps_end_of_text(tokenizer: TextTokenizer) -> None:
    assert 256 < tokenizer.vocab_size <= 320
    assert len(tokenizer.encode("Beautiful is better")) < len("Beautiful is better")
    assert tokenizer.token_text(tokenizer.eot_id) == END_OF_TEXT


def test_save_and_load(tokenizer: TextTokenizer, tmp_path: Path) -> None:
    tokenizer.save(tmp_path / "tok.json")
    again = TextTokenizer.from_file(tmp_path / "tok.json")
    assert again.encode(ZEN) == tokenizer.encode(ZEN) and again.eot_id == tokenizer.eot_id


def test_incremental_decoding_matches_full_decoding(tokenizer: TextTokenizer) -> None:
    # Multi-byte characters split across byte-level tokens must never leak U+FFFD.
    prompt = tokenizer.encode("Say: ")
    ids = tokenizer.encode("東京 🙂 Zürich is nice")
    decoder = IncrementalDecoder(tokenizer, prompt)
    pieces = [decoder.push(i) for i in ids]
    assert "".join(pieces) == tokenizer.decode(ids)
    assert all("\ufffd" not in p for p in pieces)
