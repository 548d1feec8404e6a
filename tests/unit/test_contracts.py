"""The two extension points are declared, and the code that drives them only looks them up.

A family serves through a handler of `inference.handlers.contract` (its kind decides how
the scheduler runs it) and trains through a recipe of `training.recipes.contract`. Nothing
finds a capability of either by probing for attributes.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inference.handlers import (
    HANDLERS,
    Batching,
    ContinuousHandler,
    Handler,
    MicroBatchHandler,
    load_handler,
)
from inference.server import create_app
from tests.unit.test_server import wait_ready
from training.artifact import load_artifact
from training.models import FAMILIES

ROOT = Path(__file__).resolve().parents[2]

#: family -> how its requests run (the rnn serves melodies one at a time, text batched)
EXPECTED = {"transformer": Batching.CONTINUOUS, "gan": Batching.MICRO, "vae": Batching.MICRO,
            "rbm": Batching.MICRO, "autoencoder": Batching.MICRO, "musegan": Batching.SERIAL,
            "diffusion": Batching.CONTINUOUS}


def _handler_classes() -> dict[str, type[Handler]]:
    classes: dict[str, type[Handler]] = {}
    for family, target in HANDLERS.items():
        module, _, name = target.partition(":")
        built = getattr(importlib.import_module(module), name)
        if inspect.isclass(built):
            classes[family] = built
    return classes


def test_every_family_has_a_handler_and_a_recipe() -> None:
    assert set(HANDLERS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_each_handler_declares_its_batching_and_implements_the_whole_contract(
        family: str) -> None:
    cls = _handler_classes()[family]
    assert issubclass(cls, Handler) and not inspect.isabstract(cls), cls
    assert cls.batching is EXPECTED[family]
    assert issubclass(cls, ContinuousHandler) == (cls.batching is Batching.CONTINUOUS)
    assert issubclass(cls, MicroBatchHandler) == (cls.batching is Batching.MICRO)


def test_the_rnn_serves_melodies_serially_and_text_in_the_decode_loop(
        melody_rnn_artifact: Path) -> None:
    from inference.handlers.rnn import MelodyHandler, RNNTextHandler

    assert MelodyHandler.batching is Batching.SERIAL and not inspect.isabstract(MelodyHandler)
    assert RNNTextHandler.batching is Batching.CONTINUOUS
    assert isinstance(load_handler(load_artifact(melody_rnn_artifact)), MelodyHandler)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_recipe_implements_the_training_contract(family: str) -> None:
    recipe = importlib.import_module(FAMILIES[family].recipe_module).Recipe
    assert not inspect.isabstract(recipe), recipe
    for hook in ("train_step", "evaluate", "state_objects", "export"):
        assert callable(getattr(recipe, hook, None)), (family, hook)
    assert getattr(recipe, "modality", None) in ("text", "image", "music", "track", "captioned",
                                                 None), family


def test_info_says_what_the_handler_declared(
        image_artifacts: Any, tiny_artifact: Path) -> None:
    for artifact, kinds, batching in ((image_artifacts("vae"), ["sample", "reconstruct",
                                                                "interpolate"], "micro-batch"),
                                      (tiny_artifact, [], "continuous")):
        with TestClient(create_app(artifact)) as client:
            wait_ready(client)
            info = client.get("/info").json()
        described = load_handler(load_artifact(artifact)).describe()
        assert info["kinds"] == kinds == list(described.kinds)
        assert info["batching"] == batching
        assert info["playground"] == described.playground


def _calls(root: Path, test: Callable[[ast.Call], bool]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and test(node):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def _named(node: ast.Call, *names: str) -> bool:
    return isinstance(node.func, ast.Name) and node.func.id in names


def _on_a_contract(node: ast.Call) -> bool:
    """getattr(self, ...), getattr(handler, ...), getattr(x.recipe, ...)"""
    target = node.args[0] if node.args else None
    name = target.id if isinstance(target, ast.Name) else \
        target.attr if isinstance(target, ast.Attribute) else ""
    return name == "self" or "handler" in name or "recipe" in name


@pytest.mark.parametrize("package", ["inference", "training"])
def test_no_capability_is_found_by_probing(package: str) -> None:
    probes = _calls(ROOT / package, lambda n: _named(n, "hasattr"))
    assert not probes, f"hasattr() finds a capability; declare it instead: {probes}"
    on_contracts = _calls(ROOT / package, lambda n: _named(n, "getattr") and _on_a_contract(n))
    assert not on_contracts, f"getattr() on a handler or recipe: {on_contracts}"


def test_nothing_outside_a_recipe_reaches_into_its_private_names() -> None:
    found = []
    for path in sorted((ROOT / "training").rglob("*.py")):
        if path.parent.name == "recipes":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and \
                    not node.attr.startswith("__") and "recipe" in ast.unparse(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not found, found
