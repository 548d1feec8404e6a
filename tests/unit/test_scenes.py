"""The captioned scenes a prompt-to-image model learns from, the folders of captioned images
users bring, and the judge that reads generated scenes back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data.captions import load_captioned_folder
from training.data.errors import DataError
from training.data.scenes import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    SIZE,
    Scene,
    Thing,
    bundled_scenes,
    describe,
    detail_levels,
    random_scene,
    relation,
    relation_caption,
    render,
    with_attribute,
)


def one(**kwargs: str) -> Scene:
    thing = {"shape": "circle", "colour": "red", "size": "large", "fill": "solid",
             "position": "centre", **{k: v for k, v in kwargs.items() if k != "background"}}
    return Scene(things=(Thing(**thing),), background=kwargs.get("background", "white"))


def test_captions_grow_one_attribute_at_a_time() -> None:
    scene = one(shape="circle", colour="red", size="small", fill="striped",
                position="top left", background="pale blue")
    assert [c for _, c in detail_levels(scene)] == [
        "a circle", "a red circle", "a small red circle", "a small red circle at the top left",
        "a small red striped circle at the top left",
        "a small red striped circle at the top left on a pale blue background"]
    assert describe(one(colour="orange"), ("shape", "colour")) == "an orange circle"
    assert describe(one(), ("shape", "position")) == "a circle in the centre"
    assert [named for named, _ in detail_levels(scene)][-1] == ATTRIBUTES


def test_relations_read_the_grid() -> None:
    scene = Scene(things=(Thing("circle", "red", "small", "solid", "top left"),
                          Thing("square", "blue", "large", "solid", "bottom left")),
                  background="white")
    assert relation(scene) == "above" and relation(scene, 1, 0) == "below"
    assert relation_caption(scene) == "a red circle above a blue square"
    side = Scene(things=(Thing("circle", "red", "small", "solid", "right"),
                         Thing("square", "blue", "large", "solid", "top left")),
                 background="white")
    assert relation(side) == "right of"


def test_pictures_are_deterministic_and_show_their_attributes() -> None:
    assert (bundled_scenes(8, 3).images == bundled_scenes(8, 3).images).all()
    picture = render(one(colour="blue", background="pale yellow"))
    assert picture.shape == (SIZE, SIZE, 3) and picture.dtype == np.uint8
    centre = picture[SIZE // 2, SIZE // 2].astype(int)
    assert np.abs(centre - COLOURS["blue"]).max() <= 2
    assert np.abs(picture[1, 1].astype(int) - BACKGROUNDS["pale yellow"]).max() <= 2
    small = render(one(size="small")).astype(int)
    large = render(one(size="large")).astype(int)
    ink = [int((np.abs(p - BACKGROUNDS["white"]).sum(-1) > 60).sum()) for p in (small, large)]
    assert ink[1] > 2 * ink[0]
    hollow = render(one(fill="outlined"))[SIZE // 2, SIZE // 2].astype(int)
    assert np.abs(hollow - BACKGROUNDS["white"]).max() <= 2  # an outline: empty inside
    moved = render(with_attribute(one(), "position", "top left"))
    assert np.abs(moved[8, 8].astype(int) - COLOURS["red"]).max() <= 2


def test_attributes_are_drawn_independently_and_uniformly() -> None:
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng, 1) for _ in range(3000)]
    for name, values in (("shape", 4), ("colour", 6), ("fill", 3), ("position", 9)):
        counts = np.unique([s.attribute(name) for s in scenes], return_counts=True)[1]
        assert len(counts) == values and counts.min() > 0.7 * 3000 / values, name
    red = [s for s in scenes if s.attribute("colour") == "red"]
    circles = sum(s.attribute("shape") == "circle" for s in red) / len(red)
    assert 0.18 < circles < 0.32  # the colour says nothing of the shape
    counts = np.unique([len(s.things) for s in (random_scene(rng) for _ in range(600))],
                       return_counts=True)
    assert list(counts[0]) == [1, 2, 3]


# --- a user's captioned images ----------------------------------------------------------
def save(path: Path, size: int = 8, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), 128).save(path)


def test_captions_from_a_jsonl_file_or_beside_each_image(tmp_path: Path) -> None:
    jsonl = tmp_path / "a"
    save(jsonl / "cats" / "1.png")
    save(jsonl / "2.png")
    (jsonl / "captions.jsonl").write_text(
        json.dumps({"file": "cats/1.png", "text": "a cat"}) + "\n\n"
        + json.dumps({"file": "2.png", "text": "a dog"}) + "\n")
    loaded = load_captioned_folder(jsonl)
    assert loaded.files == ["2.png", "cats/1.png"] and loaded.captions == ["a dog", "a cat"]
    assert loaded.images.shape == (2, 8, 8, 3) and loaded.mode == "RGB"
    beside = tmp_path / "b"
    save(beside / "x.png", mode="L")
    (beside / "x.txt").write_text("a grey square\n")
    loaded = load_captioned_folder(beside)
    assert loaded.captions == ["a grey square"] and loaded.images.shape == (1, 8, 8, 1)


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: (save(d / "1.png"), save(d / "2.png"), (d / "1.txt").write_text("one")),
     "images without a caption: 2.png"),
    (lambda d: (save(d / "1.png"), (d / "1.txt").write_text("one"),
                (d / "3.txt").write_text("three")), "captions without an image: 3.txt"),
    (lambda d: (save(d / "1.png"), (d / "captions.jsonl").write_text(
        json.dumps({"file": "1.png", "text": "one"}) + "\n"
        + json.dumps({"file": "9.png", "text": "nine"}) + "\n")),
     "captions images that are not in the folder: 9.png"),
    (lambda d: (save(d / "1.png"), save(d / "2.png", size=16),
                (d / "1.txt").write_text("one"), (d / "2.txt").write_text("two")),
     "the images mix sizes: 8×8 (1), 16×16 (1); make them alike (the odd ones: "),
    (lambda d: (save(d / "1.png"), save(d / "2.png", mode="L"),
                (d / "1.txt").write_text("one"), (d / "2.txt").write_text("two")),
     "the images mix modes: colour (1), grayscale (1)"),
    (lambda d: (save(d / "1.png"), (d / "captions.jsonl").write_text("{oops\n")),
     "captions.jsonl:1 is not valid JSON"),
    (lambda d: (save(d / "1.png"), (d / "1.txt").write_text("  ")),
     "empty captions or captions over 1000 characters: 1.png"),
    (lambda d: (save(d / "1.png"), (d / "1.txt").write_text("one"),
                (d / "notes.md").write_text("x")), "cannot read notes.md"),
    (lambda d: ((d / "1.png").write_bytes(b"not a png"), (d / "1.txt").write_text("one")),
     "unreadable images: 1.png"),
    (lambda d: (save(d / "1.png"), (d / "1.txt").write_bytes(b"caf\xe9")),
     "1.txt is not UTF-8 text"),
])
def test_a_captioned_folder_that_does_not_fit_is_refused_naming_the_files(
        tmp_path: Path, make: object, message: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    make(folder)  # type: ignore[operator]
    with pytest.raises(DataError) as raised:
        load_captioned_folder(folder)
    assert message in str(raised.value)


# --- the judge ------------------------------------------------------------------------
@pytest.mark.slow
def test_the_judge_reads_real_held_out_scenes_right() -> None:
    import torch

    from training.evaluation.attributes import SceneJudge, reading_accuracy

    torch.set_num_threads(1)
    judge = SceneJudge.fit(bundled_scenes(6000, 1), epochs=6)
    held_out = bundled_scenes(1000, 2)
    accuracy = reading_accuracy(judge.read(held_out.images), held_out.scenes)
    for name in ("position", "shape", "colour", "size", "fill", "background"):
        assert accuracy[name] >= 0.98, (name, accuracy)
    assert accuracy["spurious_things_per_picture"] < 0.01
    features = judge.features(held_out.images[:10])
    assert features.shape == (10, 128) and np.isfinite(features).all()
