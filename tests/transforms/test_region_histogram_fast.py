"""RegionHistogram's counting paths (per-patch bincount, packed batch, accelerator logic) against a naive reference.

The reference loops over the sub-regions and counts each one with ``np.bincount`` after dropping the ignored
pixels; it shares no code with the transform. Every case is checked for exact equality (float32 pmfs).
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_ext.transforms import RegionHistogram, RegionHistogramd


def reference(label: np.ndarray, num_classes: int, r: int, ignore_index: int | None) -> np.ndarray:
    """``(K, r, ...)`` pmfs of one ``(*spatial)`` patch: a loop over sub-regions, one bincount each."""
    blocks = [s // r for s in label.shape]
    out = np.zeros((num_classes,) + (r,) * label.ndim, dtype=np.float32)
    for cell in itertools.product(range(r), repeat=label.ndim):
        region = label[tuple(slice(c * b, (c + 1) * b) for c, b in zip(cell, blocks, strict=True))].ravel()
        if ignore_index is not None:
            region = region[region != ignore_index]
        counts = np.bincount(region.astype(np.int64), minlength=num_classes).astype(np.float32)
        if counts.sum() > 0:
            out[(slice(None),) + cell] = counts / counts.sum()
    return out


def random_case(seed: int, batch: int | None, spatial: tuple[int, ...], k: int, ignore: int | None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = ((batch, 1) if batch else (1,)) + spatial
    label = rng.integers(0, k, size=shape)
    if ignore is not None:
        label[rng.random(shape) < rng.uniform(0.1, 0.6)] = ignore
        label[(0,) * (len(shape) - len(spatial)) + tuple(slice(0, s // 2) for s in spatial)] = ignore  # empty blocks
    return label


CASES = [
    # seed, batch, spatial, num_classes, grid_sizes, ignore_index
    (0, None, (64, 64), 3, (1, 2, 4), None),  # the study's per-sample call
    (1, None, (64, 64), 3, (1, 2, 4), 255),
    (2, None, (32, 48), 4, (1, 2, 4, 8), -1),
    (3, None, (12, 18), 2, (2, 3), 0),  # ignore a class id; levels pooled from lcm 6
    (4, None, (8, 12, 16), 3, (1, 2, 4), 7),  # 3D
    (5, None, (10, 10), 5, (5,), 5000),  # ignore far from the classes
    (6, 40, (32, 32), 3, (1, 2, 4), None),  # >= 2**15 pixels: packed path
    (7, 40, (32, 32), 3, (1, 2, 4), 255),
    (8, 40, (32, 32), 6, (1, 2, 4), -3),
    (9, 9, (16, 16, 16), 3, (1, 2, 4), 4),  # 3D packed
    (10, 12, (24, 24), 2, (1, 2, 3), 1),
    (11, 40, (32, 32), 30, (1, 2, 4), 255),  # 30 fields do not fit in an int64: bincount path for a batch
    (12, 3, (8, 8), 3, (1, 2, 4), None),  # small batch: bincount path with per-patch bin offsets
]


@pytest.mark.parametrize("seed, batch, spatial, k, grid_sizes, ignore", CASES)
@pytest.mark.parametrize("kind", ["numpy", "torch", "meta"])
@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "float32"])
def test_matches_reference(seed, batch, spatial, k, grid_sizes, ignore, kind, dtype):
    label = random_case(seed, batch, spatial, k, ignore)
    if dtype == "uint8" and (label.min() < 0 or label.max() > 255):
        pytest.skip("labels outside the uint8 range")
    label = label.astype(dtype)
    inp = label if kind == "numpy" else torch.from_numpy(label.copy())
    if kind == "meta":
        inp = MetaTensor(inp, meta={"id": "case"})
    outs = RegionHistogram(k, grid_sizes, ignore, spatial_dims=len(spatial) if batch else None)(inp)
    patches = label[:, 0] if batch else label[:1]
    for r, out in zip(grid_sizes, outs, strict=True):
        assert type(out) is {"numpy": np.ndarray, "torch": torch.Tensor, "meta": MetaTensor}[kind]
        got = np.asarray(out if kind == "numpy" else out.as_tensor() if kind == "meta" else out)
        assert got.dtype == np.float32 and got.flags.c_contiguous
        expected = np.stack([reference(p, k, r, ignore) for p in patches])
        np.testing.assert_array_equal(got, expected if batch else expected[0])


def test_each_counting_path_is_exercised(monkeypatch):
    """The cases above reach the packed path, the bincount path and the bincount fallback of a batch."""
    calls = {"packed": 0, "bincount": 0}
    for name in calls:
        method = getattr(RegionHistogram, f"_{name}_counts")

        def spy(self, *args, _method=method, _name=name):
            calls[_name] += 1
            return _method(self, *args)

        monkeypatch.setattr(RegionHistogram, f"_{name}_counts", spy)
    RegionHistogram(3, (1, 2, 4), spatial_dims=2)(random_case(0, 40, (32, 32), 3, None))
    assert calls == {"packed": 1, "bincount": 0}
    RegionHistogram(3, (1, 2, 4))(random_case(0, None, (64, 64), 3, None))
    assert calls == {"packed": 1, "bincount": 1}
    RegionHistogram(30, (1, 2, 4), 255, spatial_dims=2)(random_case(0, 40, (32, 32), 30, 255))
    assert calls == {"packed": 1, "bincount": 2}


@pytest.mark.parametrize("batch", [None, 40])
@pytest.mark.parametrize(
    "ignore, bad, found",
    [
        (None, 3, "[3]"),  # just above the classes
        (None, -2, "[-2]"),  # negative
        (255, 100, "[100]"),  # inside the counted range, neither a class nor ignored
        (255, 256, "[256]"),
        (-1, -2, "[-2]"),
        (-1, 2**40, f"[{2**40}]"),  # far outside: no huge allocation, named in the message
        (7, -(2**40), f"[{-(2**40)}]"),
        (5000, 4999, "[4999]"),
    ],
)
def test_invalid_values_are_named_on_every_path(batch, ignore, bad, found):
    label = random_case(1, batch, (32, 32), 3, ignore)
    label.reshape(-1)[-5] = bad
    message = rf"label values must be in \[0, 2\] or ignore_index={ignore}, found {re.escape(found)}"
    with pytest.raises(ValueError, match=message):
        RegionHistogram(3, (1, 2, 4), ignore, spatial_dims=2 if batch else None)(label)


@pytest.mark.parametrize(
    "label, match",
    [
        (np.full((1, 4, 4), 1e30, dtype=np.float64), rf"found \[{int(1e30)}\]"),
        (np.full((1, 4, 4), 2**63 + 5, dtype=np.uint64), rf"found \[{2**63 + 5}\]"),
        (np.full((1, 4, 4), np.inf), "integer class ids"),
    ],
)
def test_extreme_values_are_rejected_not_wrapped(label, match):
    with pytest.raises(ValueError, match=match):
        RegionHistogram(3, (1, 2))(label)


def test_unusual_numpy_layouts_give_the_same_counts():
    label = random_case(3, 40, (32, 32), 3, 255)
    expected = RegionHistogram(3, (1, 2, 4), 255, spatial_dims=2)(label)
    read_only = label.copy()
    read_only.flags.writeable = False
    big_endian = label.astype(">i8")
    strided = np.repeat(label, 2, axis=-1)[..., ::2]
    bools = (label == 1).astype(bool)
    for variant in (read_only, big_endian, strided):
        for got, exp in zip(RegionHistogram(3, (1, 2, 4), 255, spatial_dims=2)(variant), expected, strict=True):
            np.testing.assert_array_equal(got, exp)
    for got, r in zip(RegionHistogram(2, (1, 2), spatial_dims=2)(bools), (1, 2), strict=True):
        np.testing.assert_array_equal(got, np.stack([reference(p, 2, r, None) for p in bools[:, 0].astype(int)]))


@pytest.mark.parametrize("ignore", [None, 255, -1, 0, 5000])
@pytest.mark.parametrize("batch", [None, 5])
def test_accelerator_path_logic_on_cpu(ignore, batch):
    """Inputs on an accelerator are counted with torch ops; run that code on CPU tensors against numpy."""
    label = random_case(4, batch, (16, 24), 3, ignore)
    hist = RegionHistogram(3, (1, 2, 4), ignore, spatial_dims=2 if batch else None)
    plan = hist._plan(label.shape, torch.device("cpu"))
    patches = torch.from_numpy(label[:, 0] if batch else label)
    pmfs = hist._pmfs(hist._bincount_counts(patches, plan), plan)
    for r, pmf in zip((1, 2, 4), pmfs, strict=True):
        assert isinstance(pmf, torch.Tensor) and pmf.dtype == torch.float32
        expected = np.stack([reference(p, 3, r, ignore) for p in patches.numpy()])
        np.testing.assert_array_equal(pmf.numpy(), expected)
    label.reshape(-1)[0] = 9
    with pytest.raises(ValueError, match=r"found \[9\]"):
        hist._bincount_counts(torch.from_numpy(label[:, 0] if batch else label), plan)


def test_metatensor_meta_is_copied_per_level():
    label = MetaTensor(torch.zeros(1, 8, 8, dtype=torch.long), meta={"tags": ["a"], "spacing": np.ones(2)})
    h1, h2 = RegionHistogram(2, (1, 2))(label)
    h1.meta["tags"].append("b")
    h1.meta["spacing"][0] = 5.0
    assert label.meta["tags"] == ["a"] and h2.meta["tags"] == ["a"]
    assert label.meta["spacing"][0] == 1.0 and h2.meta["spacing"][0] == 1.0
    assert h1.affine.dtype == torch.float64 and not torch.equal(h1.affine, h2.affine)


def test_dictionary_form_over_a_batch_and_a_patch():
    label = random_case(5, None, (64, 64), 3, 255)
    out = RegionHistogramd("label", 3, (1, 2, 4), ignore_index=255)({"label": label})
    for r in (1, 2, 4):
        np.testing.assert_array_equal(out[f"label_hist_{r}"], reference(label[0], 3, r, 255))


def test_plans_are_cached_per_shape_and_bounded():
    hist = RegionHistogram(3, (1, 2))
    for side in range(2, 2 + 2 * 40, 2):
        hist(np.zeros((1, side, side), dtype=np.int64))
    assert 0 < len(hist._plans) <= 32
    hist.grid_sizes = (1, 3)  # options changed after construction: a new plan, not a stale one
    (h3,) = hist(np.zeros((1, 6, 6), dtype=np.int64))[1:]
    assert h3.shape == (3, 3, 3) and math.isclose(float(h3[0].sum()), 9.0)
