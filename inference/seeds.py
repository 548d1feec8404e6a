"""Seeds for requests that name none.

A seed is reported back with the answer so the caller can replay it; it is not a secret.
So it comes from one generator seeded from the OS at start, not from a system call per
request.
"""

from __future__ import annotations

import random

_picker = random.Random()  # seeded from os.urandom
#: Seeds the server picks fit in a JavaScript number, so a browser can send them back.
MAX_PICKED_SEED = 2**53 - 1


def fresh_seed(limit: int) -> int:
    """A seed in [0, limit)."""
    return _picker.randrange(limit)
