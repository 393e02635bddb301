"""Dataset lookup and loading: bundled digits, procedural shapes, image folders and torchvision sets offline."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import class_counts, list_datasets, load_dataset
from bench.data.registry import ROOT_ENV
from bench.data.synthetic import SHAPES, draw_shapes
from bench.errors import DataError

ALL_NAMES = {
    "digits", "shapes", "rendered_digits", "imagefolder", "cifar10", "cifar100", "flowers102", "oxfordiiitpet",
    "dtd", "eurosat", "stl10", "svhn", "food101", "fgvcaircraft", "mnist", "fashionmnist",
}


def write_png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def assert_counts_match(cfg: dict) -> None:
    counts = class_counts(cfg)
    data = load_dataset(cfg)
    assert counts["classes"] == data.classes
    assert counts["train"].tolist() == np.bincount(data.train_labels, minlength=len(data.classes)).tolist()
    assert counts["test"].tolist() == np.bincount(data.test_labels, minlength=len(data.classes)).tolist()


def test_every_documented_name_is_registered():
    assert set(list_datasets()) == ALL_NAMES


def test_digits_is_the_real_set_with_a_fixed_stratified_test_split():
    a = load_dataset({"name": "digits"})
    b = load_dataset({"name": "Digits", "sizes": [10, "all"]})
    assert a.classes == [str(d) for d in range(10)]
    assert a.in_memory and a.train_images.dtype == np.uint8
    assert a.train_images.shape[1:] == (8, 8, 3)
    assert len(a.train_labels) + len(a.test_labels) == 1797
    assert a.train_images.max() == 255 and a.train_images.min() == 0
    # grey replicated to three equal channels
    assert np.array_equal(a.train_images[..., 0], a.train_images[..., 2])
    assert np.array_equal(a.test_images, b.test_images) and np.array_equal(a.test_labels, b.test_labels)
    test_counts = np.bincount(a.test_labels, minlength=10)
    assert test_counts.min() >= 44 and test_counts.max() <= 46
    assert a.name == "digits"


def test_digits_test_fraction_changes_the_hold_out():
    small = load_dataset({"name": "digits", "test_fraction": 0.1})
    assert 170 <= len(small.test_labels) <= 190


def test_shapes_are_deterministic_per_seed_and_follow_options():
    cfg = {"name": "shapes", "options": {"classes": 4, "per_class": 20, "test_per_class": 5, "image_size": 16}}
    a, b = load_dataset(cfg), load_dataset(cfg)
    other = load_dataset({**cfg, "options": {**cfg["options"], "seed": 1}})
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_images, b.test_images)
    assert not np.array_equal(a.train_images, other.train_images)
    assert a.train_images.shape == (80, 16, 16, 3) and a.test_images.shape == (20, 16, 16, 3)
    assert len(set(a.classes)) == 4
    assert not np.array_equal(a.train_images[:20], a.test_images[:20].repeat(4, axis=0))


def test_every_shape_class_draws_a_different_visible_shape():
    # The same generator state gives every class the same position, scale, colours and noise,
    # so the images can differ only by the shape drawn.
    images = np.concatenate(
        [draw_shapes(np.array([k]), 32, np.random.default_rng(3)) for k in range(len(SHAPES))]
    ).astype(np.int32)
    masks = np.abs(images - images[:1, :1, :1]).max(axis=-1) > 50
    coverage = masks.mean(axis=(1, 2))
    assert coverage.min() > 0.03 and coverage.max() < 0.6
    differing = (masks[:, None] != masks[None, :]).mean(axis=(-1, -2))
    assert differing[~np.eye(len(SHAPES), dtype=bool)].min() > 0.03


def test_shapes_reject_unknown_or_bad_options():
    with pytest.raises(DataError, match="no option 'colours'"):
        load_dataset({"name": "shapes", "options": {"colours": 3}})
    with pytest.raises(DataError, match="classes=40"):
        class_counts({"name": "shapes", "options": {"classes": 40}})


def test_unknown_name_suggests_the_close_one_and_the_list_command():
    with pytest.raises(DataError) as info:
        load_dataset({"name": "digts"})
    assert "did you mean 'digits'" in str(info.value)
    assert "transfer-bench list datasets" in str(info.value)
    with pytest.raises(DataError, match="unknown dataset"):
        class_counts({"name": "imagenet21k"})


def test_an_unknown_dataset_is_worded_alike_by_the_registry_and_the_suite():
    from bench.errors import SuiteError
    from bench.suite.model import suite_from_dict

    with pytest.raises(DataError) as registry:
        load_dataset({"name": "digts"})
    with pytest.raises(SuiteError) as suite:
        suite_from_dict({"name": "s", "backbones": ["test_resnet"], "datasets": ["digts"]})
    assert str(suite.value).endswith(f": {registry.value}")
    assert str(registry.value) == "unknown dataset 'digts' (did you mean 'digits'?); see 'transfer-bench list datasets'"


def test_did_you_mean_offers_the_closest_names_first_and_nothing_when_none_is_close():
    from bench.errors import did_you_mean

    assert did_you_mean("fozen", ["full", "frozen", "partial"]) == " (did you mean 'frozen'?)"
    assert did_you_mean("resnet5", ["resnet50", "resnet18", "resnet34", "resnet101"]).startswith(
        " (did you mean 'resnet50' or ")
    assert did_you_mean("zzz", ["full", "frozen"]) == ""


def test_label_overrides_the_display_name():
    assert load_dataset({"name": "digits", "label": "handwritten"}).name == "handwritten"


def test_bad_fractions_are_rejected_with_the_field_name():
    with pytest.raises(DataError, match="test_fraction"):
        load_dataset({"name": "digits", "test_fraction": 1.5})
    with pytest.raises(DataError, match="val_fraction"):
        class_counts({"name": "digits", "val_fraction": "lots"})


def test_class_counts_match_loaded_data_for_bundled_sets():
    assert_counts_match({"name": "digits", "test_fraction": 0.3})
    assert_counts_match({"name": "shapes", "options": {"classes": 3, "per_class": 7, "test_per_class": 2}})


@pytest.fixture()
def messy_folder(tmp_path: Path) -> Path:
    """Three classes of PNGs of mixed sizes, a corrupt PNG, a zero-byte JPEG, an empty class, a stray text file."""
    root = tmp_path / "pets"
    colours = {"cat": (200, 0, 0), "dog": (0, 200, 0), "emu": (0, 0, 200)}
    for name, colour in colours.items():
        for i in range(8):
            write_png(root / name / f"{i}.png", colour, size=(16 + i, 12 + 2 * i))
    (root / "dog" / "broken.PNG").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    (root / "emu" / "empty.jpg").write_bytes(b"")
    (root / "fox").mkdir()
    (root / "cat" / "notes.txt").write_text("not an image")
    write_png(root / "emu" / "nested" / "deep.png", colours["emu"])
    return root


def test_imagefolder_skips_bad_files_and_empty_classes_and_loads_the_rest(messy_folder: Path):
    data = load_dataset({"name": "imagefolder", "path": str(messy_folder), "test_fraction": 0.25})
    assert data.name == "pets"
    assert data.classes == ["cat", "dog", "emu"]
    assert not data.in_memory
    problems = "\n".join(data.problems)
    assert str(messy_folder / "dog" / "broken.PNG") in problems
    assert str(messy_folder / "emu" / "empty.jpg") in problems
    assert "empty class folder" in problems and str(messy_folder / "fox") in problems
    assert "notes.txt" in problems
    files = data.files("train") + data.files("test")
    assert len(files) == 25 and len(set(files)) == 25
    assert not any(f.endswith(("broken.PNG", "empty.jpg")) for f in files)
    assert np.bincount(data.test_labels).tolist() == [2, 2, 2]
    for path, label in zip(data.files("train"), data.train_labels):
        assert Path(path).relative_to(messy_folder).parts[0] == data.classes[label]
    again = load_dataset({"name": "imagefolder", "path": str(messy_folder)})
    assert again.files("test") == data.files("test")


def test_imagefolder_counts_agree_with_loading_when_no_file_needs_decoding(messy_folder: Path):
    (messy_folder / "dog" / "broken.PNG").unlink()
    assert_counts_match({"name": "imagefolder", "path": str(messy_folder)})


def test_imagefolder_with_train_and_test_splits(tmp_path: Path):
    for split, n in (("train", 4), ("test", 2)):
        for name, colour in (("a", (255, 0, 0)), ("b", (0, 255, 0))):
            for i in range(n):
                write_png(tmp_path / split / name / f"{i}.png", colour)
    data = load_dataset({"name": "imagefolder", "path": str(tmp_path), "label": "ab"})
    assert data.name == "ab" and data.classes == ["a", "b"]
    assert np.bincount(data.train_labels).tolist() == [4, 4]
    assert np.bincount(data.test_labels).tolist() == [2, 2]
    assert all("/test/" in f for f in data.files("test"))

    write_png(tmp_path / "test" / "c" / "0.png", (0, 0, 255))
    with pytest.raises(DataError, match="class 'c' has images in .*test but none in .*train"):
        load_dataset({"name": "imagefolder", "path": str(tmp_path)})


def test_imagefolder_errors_name_the_folder(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=str(missing)):
        load_dataset({"name": "imagefolder", "path": str(missing)})
    with pytest.raises(DataError, match="needs a 'path'"):
        class_counts({"name": "imagefolder"})
    bad = tmp_path / "bad"
    (bad / "a").mkdir(parents=True)
    (bad / "b").mkdir()
    (bad / "a" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{bad}.*no usable images"):
        load_dataset({"name": "imagefolder", "path": str(bad)})


def test_torchvision_set_missing_offline_says_where_and_how_to_fetch(tmp_path: Path):
    for call in (load_dataset, class_counts):
        with pytest.raises(DataError) as info:
            call({"name": "cifar10", "root": str(tmp_path)})
        message = str(info.value)
        assert "'cifar10' not found under" in message and str(tmp_path) in message
        assert "download: true" in message


def test_torchvision_root_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "from-env"))
    with pytest.raises(DataError, match="from-env"):
        class_counts({"name": "flowers102", "root": None})


def _write_idx(path: Path, array: np.ndarray) -> None:
    # The IDX format MNIST ships in: magic (dtype 0x08 = uint8, ndim), big-endian dims, raw bytes.
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_from_a_local_copy_loads_grey_as_rgb_in_memory(tmp_path: Path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    cfg = {"name": "mnist", "root": str(tmp_path)}
    data = load_dataset(cfg)
    assert data.in_memory and data.train_images.shape == (30, 28, 28, 3)
    assert data.test_images.shape == (10, 28, 28, 3)
    assert len(data.classes) == 10 and data.classes[0].startswith("0")
    assert np.array_equal(data.train_images[..., 0], data.train_images[..., 1])
    assert data.train_labels.tolist() == (np.arange(30) % 10).tolist()
    assert_counts_match(cfg)


def test_eurosat_from_a_local_copy_is_decoded_into_memory_with_a_held_out_test(tmp_path: Path):
    base = tmp_path / "eurosat" / "2750"
    for name, colour in (("Forest", (0, 120, 0)), ("River", (0, 0, 160)), ("Highway", (90, 90, 90))):
        for i in range(8):
            path = base / name / f"{name}_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), colour).save(path)
    cfg = {"name": "eurosat", "root": str(tmp_path), "test_fraction": 0.25}
    data = load_dataset(cfg)
    assert data.in_memory and data.train_images.shape == (18, 64, 64, 3)
    assert data.classes == ["Forest", "Highway", "River"]
    assert np.bincount(data.test_labels).tolist() == [2, 2, 2]
    forest = data.train_images[data.train_labels == 0]
    assert abs(int(forest[..., 1].mean()) - 120) <= 3
    assert_counts_match(cfg)


def test_dtd_from_a_local_copy_stays_on_disk_and_pools_train_with_val(tmp_path: Path):
    data_dir = tmp_path / "dtd" / "dtd"
    splits = {"train1": [], "val1": [], "test1": []}
    for c, texture in enumerate(["banded", "dotted", "woven"]):
        for i, split in enumerate(["train1", "train1", "val1", "test1"]):
            path = data_dir / "images" / texture / f"{texture}_{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (30 + 7 * i, 20 + 3 * c), (80 * c, 0, 0)).save(path)
            # The val split lacks 'banded', so its own class indices differ from train's.
            if not (split == "val1" and texture == "banded"):
                splits[split].append(f"{texture}/{path.name}")
    (data_dir / "labels").mkdir()
    for split, lines in splits.items():
        (data_dir / "labels" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    cfg = {"name": "dtd", "root": str(tmp_path)}
    data = load_dataset(cfg)
    assert not data.in_memory
    assert data.classes == ["banded", "dotted", "woven"]
    assert np.bincount(data.train_labels).tolist() == [2, 3, 3]
    assert np.bincount(data.test_labels).tolist() == [1, 1, 1]
    for split in ("train", "test"):
        for path, label in zip(data.files(split), data.labels(split)):
            assert Path(path).parent.name == data.classes[label]
    assert_counts_match(cfg)


def test_class_counts_are_saved_and_follow_a_folder_that_changes(tmp_path, monkeypatch):
    from PIL import Image

    from bench.data import class_counts

    monkeypatch.setenv("TRANSFER_BENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    for name, count in (("cat", 6), ("dog", 8)):
        (folder / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(folder / name / f"{i}.png")
    config = {"name": "imagefolder", "path": str(folder), "test_fraction": 0.5}
    first = class_counts(config)
    (saved,) = (tmp_path / "cache" / "counts").iterdir()
    assert class_counts(config)["train"].tolist() == first["train"].tolist()

    for i in range(8, 12):
        Image.new("RGB", (4, 4)).save(folder / "dog" / f"{i}.png")
    grown = class_counts(config)
    assert grown["train"].sum() + grown["test"].sum() == first["train"].sum() + first["test"].sum() + 4
    assert len(list((tmp_path / "cache" / "counts").iterdir())) == 2

    saved.write_text("{damaged")
    assert class_counts(config)["classes"] == ["cat", "dog"]


def test_a_folder_given_as_dot_is_named_alike_by_the_suite_and_the_loaded_dataset(tmp_path, monkeypatch):
    from PIL import Image

    from bench.config import DatasetConfig

    folder = tmp_path / "photos"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(folder / name / f"{i}.png")
    monkeypatch.chdir(folder)
    config = DatasetConfig(name="imagefolder", path=".", test_fraction=0.5)
    assert config.display_name == "photos"
    assert load_dataset(config.model_dump()).name == config.display_name
    assert load_dataset({**config.model_dump(), "label": "pets"}).name == "pets"
