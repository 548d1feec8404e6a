"""How the playground builds a request for a family, as the server's /info tells it.

`playground_hints(handler, modality)` describes one request: what the person gives
(`input`: "text", "midi" or "none"), where it goes in the payload (`input_field`), the
payload's other fields (`template`), whether it streams and what comes back (`output`:
"text", "png", "midi" or "json"). A handler may define a `playground` attribute of the
same shape to describe itself (a music family that takes a melody names its MIDI
field there); otherwise the modality decides.
"""

from __future__ import annotations

from typing import Any


def playground_hints(handler: Any, modality: str) -> dict[str, Any]:
    own = getattr(handler, "playground", None)
    if isinstance(own, dict):
        return own
    if modality == "text":
        # Leave room for the prompt in a small model's context.
        context = getattr(handler, "context_limit", None) or 128
        return {"input": "text", "input_field": "inputs", "stream": True, "output": "text",
                "template": {"parameters": {"max_new_tokens": min(64, context // 2),
                                            "temperature": 0.9, "top_k": 50}}}
    if modality == "music":
        return {"input": "midi", "input_field": "primer_midi", "stream": False,
                "output": "midi",
                "template": {"kind": "continue", "max_new_notes": 32, "temperature": 1.0}}
    kinds = list(getattr(handler, "kinds", {}) or {})
    image_kinds: frozenset[str] = getattr(handler, "image_kinds", frozenset())
    if "sample" in kinds and "sample" in image_kinds:
        return {"input": "none", "stream": False, "output": "png",
                "template": {"kind": "sample", "n": 1}}
    return {"input": "none", "stream": False, "output": "json",
            "template": {"kind": kinds[0] if kinds else "generate"}}
