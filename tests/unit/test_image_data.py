"""Image data: the bundled digits, user folders of PNG/JPEG, and what is refused."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import write_digit_pngs
from training.data.errors import DataError
from training.data.folder import scan_folder
from training.data.images import bundled_digits, load_image_folder, split
from training.data.inspect import summarize
from training.models.formats.png import encode_png, grid


def test_bundled_digits_are_the_scikit_learn_set() -> None:
    digits = bundled_digits()
    assert digits.images.shape == (1797, 1, 8, 8)
    assert digits.images.dtype == np.float32
    assert digits.images.min() == 0.0 and digits.images.max() == 1.0
    assert digits.labels is not None and set(digits.labels.tolist()) == set(range(10))
    assert digits.classes == tuple("0123456789") and digits.mode == "L"
    assert bundled_digits(16).images.shape == (1797, 1, 16, 16)


def test_class_subfolders_label_the_images(digits_dir: Path) -> None:
    data = load_image_folder(scan_folder(digits_dir), size=8)
    assert data.classes == ("3", "7") and data.mode == "L"
    assert data.images.shape == (24, 1, 8, 8)
    assert data.labels is not None and np.bincount(data.labels).tolist() == [12, 12]
    summary = data.summary()
    assert summary["per_class"] == {"3": 12, "7": 12} and summary["files"] == 24


def test_loose_images_are_unconditional_and_resized(tmp_path: Path) -> None:
    write_digit_pngs(tmp_path, subfolders=False, per_class=3)
    Image.new("RGB", (20, 10), (255, 0, 0)).convert("L").save(tmp_path / "wide.jpg")
    data = load_image_folder(scan_folder(tmp_path), size=16)
    assert data.labels is None and data.classes == ()
    assert data.images.shape == (7, 1, 16, 16)


def test_colour_folder_has_three_channels(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("RGB", (8, 8), (255, 128 * (i % 2), 0)).save(tmp_path / f"c{i}.png")
    data = load_image_folder(scan_folder(tmp_path), size=8)
    assert data.mode == "RGB" and data.images.shape == (3, 3, 8, 8)
    assert np.allclose(data.images[0, 0], 1.0) and np.allclose(data.images[0, 2], 0.0)


def test_mixed_modes_are_refused_naming_the_odd_files(tmp_path: Path) -> None:
    write_digit_pngs(tmp_path, subfolders=False, per_class=3)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "red.png")
    with pytest.raises(DataError) as info:
        load_image_folder(scan_folder(tmp_path), size=8)
    message = str(info.value)
    assert "mixes grayscale and colour images (6 grayscale, 1 colour)" in message
    assert "red.png" in message and "3-" not in message


def test_a_corrupt_image_is_refused_by_name(tmp_path: Path) -> None:
    write_digit_pngs(tmp_path, per_class=2)
    (tmp_path / "7" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match=r"broken\.png is not a readable image"):
        load_image_folder(scan_folder(tmp_path), size=8)


def test_images_both_loose_and_in_subfolders_are_refused(tmp_path: Path) -> None:
    write_digit_pngs(tmp_path, per_class=2)
    Image.new("L", (8, 8)).save(tmp_path / "stray.png")
    with pytest.raises(DataError, match=r"move stray\.png"):
        load_image_folder(scan_folder(tmp_path), size=8)


def test_a_text_folder_is_not_images(text_dir: Path) -> None:
    with pytest.raises(DataError, match="this family trains on images"):
        load_image_folder(scan_folder(text_dir), size=8)


def test_split_is_seeded_and_disjoint() -> None:
    digits = bundled_digits()
    train, val = split(digits, 0.2, seed=3)
    again, _ = split(digits, 0.2, seed=3)
    other, _ = split(digits, 0.2, seed=4)
    assert len(val) == 359 and len(train) + len(val) == 1797
    assert np.array_equal(train.images, again.images)
    assert not np.array_equal(train.images, other.images)


def test_grid_and_png_round_trip() -> None:
    images = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    tiled = grid(images, pad=1)
    assert tiled.shape == (1, 2 * 9 + 1, 3 * 9 + 1)
    assert np.array_equal(tiled[:, 1:9, 1:9], images[0])
    png = encode_png(images[0], scale=2)
    with Image.open(io.BytesIO(png)) as pil:
        assert pil.size == (16, 16) and pil.mode == "L"


def test_inspect_checks_and_summarises_images(digits_dir: Path) -> None:
    summary = summarize(digits_dir)
    assert summary["modality"] == "image" and summary["images"] == 24
    assert summary["mode"] == "L" and summary["classes"] == "3, 7"
    assert summary["families"] == "gan, vae, rbm, autoencoder"
