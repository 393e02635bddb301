"""Rendered digits: deterministic per seed, the right shapes and counts, recognisable, options checked."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data import class_counts, describe_datasets, load_dataset
from bench.errors import DataError


def _config(**options):
    return {"name": "rendered_digits", "options": {"per_class": 12, "test_per_class": 4, **options}}


def test_registered_with_its_options_described():
    assert "per_class=300" in describe_datasets()["rendered_digits"]


def test_same_seed_same_images_other_seed_other_images():
    first = load_dataset(_config(seed=3))
    again = load_dataset(_config(seed=3))
    other = load_dataset(_config(seed=4))
    assert np.array_equal(first.train_images, again.train_images)
    assert np.array_equal(first.test_images, again.test_images)
    assert not np.array_equal(first.train_images, other.train_images)
    # The test split is drawn from its own stream, never a copy of the training images.
    assert not np.array_equal(first.train_images[: len(first.test_images)], first.test_images)


@pytest.mark.parametrize("size", [8, 32])
def test_shapes_labels_and_counts(size):
    dataset = load_dataset(_config(image_size=size))
    assert dataset.train_images.shape == (120, size, size, 3)
    assert dataset.test_images.shape == (40, size, size, 3)
    assert dataset.train_images.dtype == np.uint8
    assert dataset.classes == [str(d) for d in range(10)]
    counts = class_counts(_config(image_size=size))
    assert counts["train"].tolist() == np.bincount(dataset.train_labels).tolist() == [12] * 10
    assert counts["test"].tolist() == np.bincount(dataset.test_labels).tolist() == [4] * 10
    # Grey like scikit-learn's digits: the three channels are one image.
    assert np.array_equal(dataset.train_images[..., 0], dataset.train_images[..., 2])


def test_white_ink_on_black_with_the_digit_inside_the_frame():
    images = load_dataset(_config(image_size=16, noise=0.0)).train_images[..., 0].astype(float)
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
    centre = images[:, 4:12, 4:12]
    assert centre.mean() > 3 * border.mean()
    assert images.max() > 150


def test_digits_are_recognisable_by_a_nearest_centroid():
    options = {"per_class": 60, "test_per_class": 20, "image_size": 8}
    dataset = load_dataset({"name": "rendered_digits", "options": options})
    x = dataset.train_images[..., 0].reshape(len(dataset.train_labels), -1).astype(float)
    centroids = np.stack([x[dataset.train_labels == k].mean(0) for k in range(10)])
    test = dataset.test_images[..., 0].reshape(len(dataset.test_labels), -1).astype(float)
    predicted = np.argmin(((test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    # Chance is 0.1; a centroid per digit is a weak classifier, yet it must see the digits.
    assert (predicted == dataset.test_labels).mean() > 0.4


def test_noise_and_rotation_options_change_the_images():
    plain = load_dataset(_config(noise=0.0, max_rotation=0.0)).train_images
    noisy = load_dataset(_config(noise=0.5, max_rotation=0.0)).train_images
    assert not np.array_equal(plain, noisy)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"per_class": 0}, "per_class=0"),
        ({"image_size": 4}, "image_size=4"),
        ({"noise": 2.0}, "noise=2.0"),
        ({"max_rotation": "lots"}, "max_rotation='lots'"),
        ({"seed": 1.5}, "seed=1.5"),
        ({"fonts": ["x.ttf"]}, "no option 'fonts'"),
    ],
)
def test_bad_options_name_the_option(options, message):
    with pytest.raises(DataError, match=message):
        load_dataset({"name": "rendered_digits", "options": options})
