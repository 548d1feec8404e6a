"""A general-purpose compressor as a language-model baseline: the bits per character it
needs for held-out text when it has already read the training text.

`lzma` (xz) at its strongest preset (9 | extreme) codes the training text, then the
training text followed by the held-out text; the difference in size is what the held-out
text cost given everything before it, as a language model's held-out loss is. A model
that does not beat it has learned no more of the language than a dictionary coder finds.
"""

from __future__ import annotations

import lzma
from collections.abc import Sequence

#: What separates documents in the stream the compressor reads (the model's end token).
SEPARATOR = "\x00"


def _size(data: bytes) -> int:
    return len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def lzma_bits_per_char(train: Sequence[str], held_out: Sequence[str]) -> float:
    """Bits per character of ``held_out``, coded after ``train`` as a prefix."""
    prefix = SEPARATOR.join(train).encode("utf-8")
    rest = (SEPARATOR + SEPARATOR.join(held_out)).encode("utf-8")
    characters = sum(len(d) for d in held_out)
    if not characters:
        raise ValueError("no held-out characters to code")
    return 8.0 * (_size(prefix + rest) - _size(prefix)) / characters
