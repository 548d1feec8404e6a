"""Taking a request body apart: strict JSON within limits, or a 4xx that says what to change.

Every body `/invocations` (and the TGI and OpenAI routes) receives passes through
`parse_body` on the server's intake threads, never on the event loop, so a large or
hostile body costs pings nothing. What it refuses, with a 400 naming the place:

- a body that is not UTF-8, or not JSON (`NaN`, `Infinity` and `-Infinity` are not JSON);
- nesting deeper than `MAX_DEPTH` (a JSON parser recurses; so would everything after it);
- an integer outside ±2^64 (no field takes one; Python's own limit of 4,300 digits would
  otherwise surface as an error of its own), or a number that overflows to infinity
  (`1e400`);
- a lone UTF-16 surrogate (`"\\ud800"`) in any string or key: valid JSON syntax, but not
  a character; it cannot be tokenized, stored or sent back as UTF-8.

A `text/plain` body is a bare prompt. The checks walk the parsed value once, iteratively;
the surrogate check runs only when the raw text holds a surrogate escape at all.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from inference.errors import ClientError

#: Containers inside containers; the deepest request genkiln takes (pixel rows of an
#: image inside a list of images inside the body) is 5 deep.
MAX_DEPTH = 32
#: Integers beyond this (either sign) are refused: seeds, counts and ids all fit in 64 bits.
MAX_INTEGER = 2**64

JSON_TYPES = ("application/json", "*/*", "")
TEXT = "text/plain"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _bad(message: str) -> ClientError:
    return ClientError(message, status=400)


def media_type(content_type: str | None) -> str:
    return (content_type or "application/json").split(";")[0].strip().lower()


def parse_body(body: bytes, content_type: str | None) -> Any:
    """The request's JSON value (or, for text/plain, its text), checked as above."""
    kind = media_type(content_type)
    if kind not in (*JSON_TYPES, TEXT) and not kind.endswith("+json"):
        raise ClientError(f"Content-Type {kind} is not supported; send application/json",
                          status=415)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"body is not UTF-8 (byte {exc.start} is {body[exc.start]:#04x}); send "
                   f"UTF-8 encoded JSON") from None
    if kind == TEXT:
        return text
    try:
        value = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise _bad(f"body is not valid JSON ({exc}); send a JSON object such as "
                   f'{{"inputs": "Once upon a time"}}') from None
    except RecursionError:
        raise _bad(f"body nests deeper than {MAX_DEPTH} levels; flatten it") from None
    except ValueError as exc:  # an integer past Python's 4,300-digit conversion limit
        raise _bad(f"body holds a number too long to read ({exc}); numbers must fit in "
                   f"64 bits") from None
    check_value(value, surrogates=bool(_SURROGATE_ESCAPE.search(text)))
    return value


def _not_json(constant: str) -> Any:
    raise _bad(f"body holds {constant}, which is not JSON; send finite numbers only")


def _where(path: Any) -> str:
    """`parameters.stop.0` from the linked (parent, key) pairs of the walk."""
    keys = []
    while path is not None:
        path, key = path
        keys.append(str(key))
    return ".".join(reversed(keys)) or "body"


def _check_string(value: str, path: Any) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        raise _bad(f"{_where(path)}: holds a lone UTF-16 surrogate (\\u{code:04x}) at "
                   f"character {exc.start}, which is not a character; send valid Unicode "
                   f"(a surrogate pair, or the character itself)") from None


def check_value(root: Any, *, surrogates: bool = True) -> None:
    """Refuse too deep nesting, out-of-range numbers and (with ``surrogates``) lone
    surrogates anywhere in ``root``: one iterative walk, no recursion."""
    if isinstance(root, str):
        if surrogates:
            _check_string(root, None)
        return
    if not isinstance(root, (list, dict)):
        _check_scalar(root, None)
        return
    stack: list[tuple[Any, int, Any]] = [(root, 1, None)]
    while stack:
        container, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise _bad(f"{_where(path)}: nests deeper than {MAX_DEPTH} levels; flatten it")
        items = container.items() if isinstance(container, dict) else enumerate(container)
        for key, item in items:
            if surrogates and type(key) is str:
                _check_string(key, (path, "<key>"))
            kind = type(item)
            if kind is str:
                if surrogates:
                    _check_string(item, (path, key))
            elif kind is list or kind is dict:
                stack.append((item, depth + 1, (path, key)))
            elif kind is int or kind is float:
                _check_scalar(item, (path, key))


def _check_scalar(value: Any, path: Any) -> None:
    if type(value) is int and not -MAX_INTEGER <= value <= MAX_INTEGER:
        raise _bad(f"{_where(path)}: the integer is out of range; numbers must fit in "
                   f"64 bits")
    if type(value) is float and not math.isfinite(value):
        raise _bad(f"{_where(path)}: the number overflows to infinity; send a finite "
                   f"number")
