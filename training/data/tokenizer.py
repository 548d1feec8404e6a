"""A byte-level BPE tokenizer trained on the corpus, saved as JSON inside the artifact.

Byte-level BPE (as in GPT-2) can encode any string, so no input is ever out of
vocabulary; training it on the user's own data keeps the vocabulary small and apt.
The file format is the Hugging Face ``tokenizers`` JSON: plain data, safe to load.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        eot = tokenizer.token_to_id(END_OF_TEXT)
        if eot is None:
            raise ValueError(f"tokenizer has no {END_OF_TEXT} token")
        self.eot_id: int = eot

    @classmethod
    def train(cls, documents: Iterable[str], *, vocab_size: int) -> TextTokenizer:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[END_OF_TEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes
            show_progress=False,
        )
        tok.train_from_iterator(documents, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_file(cls, path: Path) -> TextTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: Path) -> None:
        self._tok.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def vocabulary(self) -> dict[str, int]:
        """Token text -> id: two tokenizers with the same vocabulary encode alike."""
        return dict(self._tok.get_vocab())

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def token_text(self, token_id: int) -> str:
        return self._tok.id_to_token(token_id) or ""


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas, holding back split characters.

    One byte-level token can end in the middle of a UTF-8 character; decoding it alone
    gives U+FFFD. Like text-generation-inference, decode a short window before and
    after the new token and emit only the difference once it forms whole characters.
    """

    def __init__(self, tokenizer: TextTokenizer, prompt_ids: Sequence[int] = ()) -> None:
        self._tok = tokenizer
        self._ids: list[int] = list(prompt_ids)
        self._prefix = max(0, len(self._ids) - 5)
        self._read = len(self._ids)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._tok.decode(self._ids[self._prefix:self._read])
        after = self._tok.decode(self._ids[self._prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back once generation ends (an incomplete character)."""
        before = self._tok.decode(self._ids[self._prefix:self._read])
        after = self._tok.decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        return after[len(before):]
