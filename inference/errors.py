"""Errors a client can act on: an HTTP status, a type, and a message that says what to change."""

from __future__ import annotations

import base64
import binascii

from pydantic import ValidationError


class ClientError(Exception):
    """A request the server refuses; never a stack trace, always a hint."""

    def __init__(self, message: str, *, status: int = 422, error_type: str = "validation"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type

    def body(self) -> dict[str, str]:
        # Hugging Face text-generation-inference's error shape, so its clients parse it.
        return {"error": self.message, "error_type": self.error_type}

    def openai_body(self) -> dict[str, dict[str, str | int | None]]:
        # OpenAI's, on the OpenAI routes: its SDK shows error.message.
        return {"error": {"message": self.message, "type": self.error_type, "param": None,
                          "code": self.status}}


def from_validation_error(exc: ValidationError, *, valid: dict[str, list[str]] | None = None
                          ) -> ClientError:
    """Turn pydantic's errors into one readable message: `field: problem; field: problem`."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        message = error["msg"]
        if error["type"] == "extra_forbidden" and valid:
            parent = ".".join(str(p) for p in error["loc"][:-1]) or "body"
            if parent in valid:
                message += f" (valid keys: {', '.join(valid[parent])})"
        problems.append(f"{where}: {message}")
    return ClientError("invalid request: " + "; ".join(problems))


def midi_from_base64(value: str, field: str) -> bytes:
    """The bytes of a base64 MIDI file sent in ``field``; a 4xx saying what to send if not."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(f"{field} is not valid base64; send the MIDI file's bytes "
                          f"base64-encoded") from None
