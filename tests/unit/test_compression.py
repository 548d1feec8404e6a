"""The compressor baseline beside the text models: bits per held-out character to lzma
when it has read the training text."""

import lzma

import pytest

from training.compression import SEPARATOR, lzma_bits_per_char


def test_lzma_bits_per_char_is_the_held_out_texts_share_of_the_compressed_stream() -> None:
    train = ["the quick brown fox jumps over the lazy dog. " * 20, "pack my box with jugs."]
    held_out = ["the quick brown fox jumps over the lazy dog."]
    prefix = SEPARATOR.join(train).encode()
    whole = prefix + (SEPARATOR + held_out[0]).encode()
    size = lambda b: len(lzma.compress(b, preset=9 | lzma.PRESET_EXTREME))  # noqa: E731
    by_hand = 8 * (size(whole) - size(prefix)) / len(held_out[0])
    assert lzma_bits_per_char(train, held_out) == pytest.approx(by_hand)
    # Text it has read costs far less than text it has not.
    unseen = ["zyxwv utsrq ponml kjihg fedcb a0987 65432 1!@#$"]
    assert lzma_bits_per_char(train, held_out) < lzma_bits_per_char(train, unseen) / 2


def test_no_held_out_text_is_refused() -> None:
    with pytest.raises(ValueError, match="no held-out characters"):
        lzma_bits_per_char(["abc"], [""])
