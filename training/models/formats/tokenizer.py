"""A byte-level BPE tokenizer trained on the corpus, saved as JSON inside the artifact.

Byte-level BPE (as in GPT-2) can encode any string, so no input is ever out of
vocabulary; training it on the user's own data keeps the vocabulary small and apt.
The file format is the Hugging Face ``tokenizers`` JSON: plain data, safe to load.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"
#: The tokenizer's file in an artifact.
TOKENIZER_FILE = "tokenizer.json"
_UNSET = object()


class TextTokenizer:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        eot = tokenizer.token_to_id(END_OF_TEXT)
        if eot is None:
            raise ValueError(f"tokenizer has no {END_OF_TEXT} token")
        self.eot_id: int = eot
        self._bytes: object = _UNSET  # token_bytes(), made at first use

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

    def token_bytes(self) -> list[bytes] | None:
        """Each token's bytes, by id, for a byte-level vocabulary (None for another kind);
        special tokens stand for their own text."""
        if self._bytes is _UNSET:
            self._bytes = _byte_table(self._tok)
        return self._bytes  # type: ignore[return-value]

    def longest_token(self) -> int:
        """Characters of text one token covers at most: a prompt longer than this times
        the context can never fit, whatever its tokens."""
        table = self.token_bytes()
        if table is not None:
            return max(len(b) for b in table)
        return max(len(t) for t in self._tok.get_vocab())


@cache
def byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte
    (bytes that print as themselves keep their character; the others map to 256 upward)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def _byte_table(tok: Tokenizer) -> list[bytes] | None:
    alphabet = byte_alphabet()
    special = {t.content for t in tok.get_added_tokens_decoder().values()}
    table: list[bytes] = [b""] * tok.get_vocab_size()
    for text, token_id in tok.get_vocab().items():
        if text in special:
            table[token_id] = text.encode("utf-8")
        elif all(c in alphabet for c in text):
            table[token_id] = bytes(alphabet[c] for c in text)
        else:
            return None  # not a byte-level vocabulary
    return table


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas, holding back split characters.

    One byte-level token can end in the middle of a UTF-8 character. The decoder keeps
    each token's bytes and decodes them with an incremental UTF-8 decoder, so a character
    comes out once its last byte arrives, never as U+FFFD. Bytes that can never form a
    character (a model may emit any byte sequence, and a barely trained one does) are
    dropped, as is an incomplete character left at the end of a generation: the text is
    characters only. The deltas concatenate to `text`.

    A tokenizer that is not byte-level falls back to TGI's approach: decode a short
    window before and after the new token and emit the difference once it forms whole
    characters.
    """

    def __init__(self, tokenizer: TextTokenizer, prompt_ids: Sequence[int] = ()) -> None:
        self._tok = tokenizer
        self._bytes = tokenizer.token_bytes()
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._ids: list[int] = list(prompt_ids)
        self._prefix = max(0, len(self._ids) - 5)
        self._read = len(self._ids)
        self.text = ""  # everything emitted so far

    def push(self, token_id: int) -> str:
        if self._bytes is not None:
            piece = self._utf8.decode(self._bytes[token_id])
        else:
            self._ids.append(token_id)
            before = self._tok.decode(self._ids[self._prefix:self._read])
            after = self._tok.decode(self._ids[self._prefix:])
            piece = ""
            if len(after) > len(before) and not after.endswith("\ufffd"):
                self._prefix, self._read = self._read, len(self._ids)
                piece = after[len(before):]
        self.text += piece
        return piece

    def flush(self) -> str:
        """Whatever is still held back once generation ends: nothing for byte-level
        tokens (an unfinished character is dropped), the window's rest otherwise."""
        if self._bytes is not None:
            self._utf8.reset()
            return ""
        before = self._tok.decode(self._ids[self._prefix:self._read])
        after = self._tok.decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        piece = after[len(before):]
        self.text += piece
        return piece
