"""Hyperparameters: SageMaker's string map -> typed dataclass configs.

SageMaker hands a training container a JSON object whose values are all strings
(``{"batch_size": "32", "bias": "false", "betas": "[0.9, 0.95]"}``); script-mode
toolkits pass the same values as ``--batch_size 32`` tokens. Both arrive here as
``dict[str, str]`` and are parsed into the declared type of a dataclass field. A key no
config declares is refused with the list of valid keys, so a typo never silently trains
with a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

T = TypeVar("T")

#: Keys SageMaker's SDK and toolkits add on their own (sagemaker_program, ...).
RESERVED_PREFIX = "sagemaker_"

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_NONE = {"none", "null", ""}


class HyperparameterError(ValueError):
    """A hyperparameter is unknown, ill-typed or out of range; the message says which."""


def parse_cli_overrides(tokens: Sequence[str]) -> dict[str, str]:
    """Turn ``--k v`` and ``--k=v`` tokens into a string map (dashes in keys become ``_``).

    Values stay strings: typing happens against a config, in one place, whatever the
    source (hyperparameters.json or the command line).
    """
    out: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise HyperparameterError(
                f"expected a hyperparameter flag like --batch_size 32 or --batch_size=32, "
                f"got {token!r}"
            )
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise HyperparameterError(f"hyperparameter --{key} has no value")
            value = tokens[i + 1]
            i += 1
        out[key.replace("-", "_")] = value
        i += 1
    return out


def _unquote(text: str) -> str:
    # The SageMaker SDK json-encodes each value, so a string arrives as '"adam"'.
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(decoded, str):
            return decoded
    return text


def parse_value(key: str, text: str, annotation: Any) -> Any:
    """Parse one string into ``annotation`` (int, float, bool, str, Literal, list, X | None)."""
    text = _unquote(str(text).strip())
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in _NONE:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for candidate in inner:
            try:
                return parse_value(key, text, candidate)
            except HyperparameterError as exc:
                errors.append(str(exc))
        raise HyperparameterError("; ".join(errors))

    if origin is Literal:
        choices = [str(a) for a in args]
        if text not in choices:
            raise HyperparameterError(f"{key} must be one of {', '.join(choices)}; got {text!r}")
        return next(a for a in args if str(a) == text)

    if annotation is bool:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise HyperparameterError(f"{key} must be true or false; got {text!r}")

    if annotation is int:
        try:
            return int(text)
        except ValueError:
            # "1e3" or "100.0" are common ways to write an integer; accept exact ones.
            try:
                as_float = float(text)
            except ValueError:
                as_float = float("nan")
            if as_float.is_integer():
                return int(as_float)
            raise HyperparameterError(f"{key} must be an integer; got {text!r}") from None

    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise HyperparameterError(f"{key} must be a number; got {text!r}") from None

    if annotation is str:
        return text

    if origin in (list, tuple):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            # Also accept a bare comma-separated list: "0.9,0.95".
            items = [part.strip() for part in text.strip("[]").split(",") if part.strip()]
        if not isinstance(items, list):
            raise HyperparameterError(f"{key} must be a list like [1, 2]; got {text!r}")
        item_type = args[0] if args else str
        parsed = [parse_value(key, json.dumps(v) if not isinstance(v, str) else v, item_type)
                  for v in items]
        return tuple(parsed) if origin is tuple else parsed

    raise TypeError(f"unsupported hyperparameter type {annotation!r} for {key}")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build(cls: type[T], values: Mapping[str, str]) -> T:
    """Instantiate dataclass ``cls`` from the subset of ``values`` that names its fields."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in values:
            kwargs[f.name] = parse_value(f.name, values[f.name], hints[f.name])
    config = cls(**kwargs)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def check_known(values: Iterable[str], configs: Iterable[type]) -> None:
    """Refuse keys that none of ``configs`` declares, listing every valid key."""
    valid: list[str] = []
    for cls in configs:
        valid.extend(field_names(cls))
    unknown = sorted(k for k in values if k not in valid and not k.startswith(RESERVED_PREFIX))
    if unknown:
        raise HyperparameterError(
            f"unknown hyperparameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"valid ones are: {', '.join(sorted(valid))}"
        )


def require(condition: bool, key: str, message: str) -> None:
    """Range check for a config's ``validate()``: the error names the key to change."""
    if not condition:
        raise HyperparameterError(f"{key} {message}")


def as_strings(config: Any) -> dict[str, str]:
    """The inverse of :func:`build`: a config as SageMaker's string map."""
    out = {}
    for key, value in dataclasses.asdict(config).items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            out[key] = json.dumps(list(value))
        elif value is None:
            out[key] = "none"
        else:
            out[key] = str(value)
    return out
