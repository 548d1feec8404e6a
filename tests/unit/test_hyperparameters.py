from dataclasses import dataclass
from typing import Literal

import pytest

from training.config import TrainConfig
from training.hyperparameters import (
    HyperparameterError,
    as_strings,
    build,
    check_known,
    parse_cli_overrides,
)
from training.models.transformer import TransformerConfig


@dataclass
class Example:
    steps: int = 1
    rate: float = 0.5
    flag: bool = False
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    sizes: list[int] | None = None
    limit: float | None = 1.0


def test_sagemaker_strings_become_typed_values() -> None:
    cfg = build(Example, {"steps": "3", "rate": "0.001", "flag": "true", "name": "gpt",
                          "mode": "b", "sizes": "[1, 2]", "limit": "none"})
    assert cfg == Example(steps=3, rate=0.001, flag=True, name="gpt", mode="b", sizes=[1, 2],
                          limit=None)


def test_sdk_json_encoded_strings_are_unquoted() -> None:
    # The SageMaker SDK json-encodes values: a str arrives with its quotes.
    assert build(Example, {"name": '"gpt"', "steps": "1e3"}) == Example(name="gpt", steps=1000)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("steps", "three", "steps must be an integer; got 'three'"),
    ("steps", "2.5", "steps must be an integer"),
    ("rate", "fast", "rate must be a number"),
    ("flag", "maybe", "flag must be true or false"),
    ("mode", "c", "mode must be one of a, b; got 'c'"),
])
def test_ill_typed_values_name_the_key(key: str, value: str, expected: str) -> None:
    with pytest.raises(HyperparameterError, match=expected):
        build(Example, {key: value})


def test_both_flag_forms_and_dashes() -> None:
    tokens = ["--batch_size", "25", "--learning-rate=0.01", "--bias=false", "--stop", "a=b"]
    assert parse_cli_overrides(tokens) == {
        "batch_size": "25", "learning_rate": "0.01", "bias": "false", "stop": "a=b"}


@pytest.mark.parametrize("tokens", [["--batch_size"], ["batch_size", "3"],
                                    ["--a", "--b", "1"]])
def test_malformed_flags_are_refused(tokens: list[str]) -> None:
    with pytest.raises(HyperparameterError):
        parse_cli_overrides(tokens)


def test_unknown_keys_are_refused_with_the_valid_list() -> None:
    with pytest.raises(HyperparameterError) as info:
        check_known({"batch_size": "1", "n_layers": "2"}, [TrainConfig, TransformerConfig])
    message = str(info.value)
    assert "unknown hyperparameter n_layers" in message
    assert "n_layer" in message and "batch_size" in message and "learning_rate" in message


def test_sagemaker_reserved_keys_are_accepted() -> None:
    check_known({"sagemaker_program": "x", "sagemaker_region": "eu-west-1"}, [TrainConfig])


@pytest.mark.parametrize(("values", "expected"), [
    ({"learning_rate": "0"}, "learning_rate must be positive"),
    ({"batch_size": "0"}, "batch_size must be at least 1"),
    ({"val_fraction": "1.5"}, "val_fraction must be between 0 and 1"),
])
def test_out_of_range_values_are_refused(values: dict[str, str], expected: str) -> None:
    with pytest.raises(HyperparameterError, match=expected):
        build(TrainConfig, values)


def test_model_shape_is_checked() -> None:
    with pytest.raises(HyperparameterError, match=r"n_embd \(100\) must be divisible by n_head"):
        build(TransformerConfig, {"n_embd": "100", "n_head": "3"})


def test_strings_round_trip() -> None:
    cfg = Example(steps=4, flag=True, sizes=[3], limit=None)
    assert build(Example, as_strings(cfg)) == cfg
