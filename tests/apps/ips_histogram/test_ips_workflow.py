"""IPSHistogramWorkflow end to end on tiny data: three methods, two patch sizes, tables, plots, evaluate-only."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from monai_ext.apps.ips_histogram import METHODS, IPSHistogramWorkflow
from monai_ext.inferers import CenterPixelInferer, RegionHistogramInferer

TINY = {"max_epochs": 1, "num_patches": 8, "batch_size": 8, "channels": (4, 8), "fcn_features": (4, 4, 8, 8, 8, 4),
        "num_cases": 3, "image_size": 64, "device": "cpu"}


def test_three_methods_two_patch_sizes(tmp_path):
    wf = IPSHistogramWorkflow(None, tmp_path / "out", tmp_path / "ckpt", methods=METHODS, patch_sizes=(32, 48),
                              hist_stride=8, **TINY)
    rows = wf.run()
    assert [(r["method"], r["patch_size"]) for r in rows] == [(m, p) for p in (32, 48) for m in METHODS]
    for r in rows:
        assert 0 <= r["mean_jaccard"] <= 100 and r["infer_mpix_per_s"] > 0
        assert r["mean_jaccard"] == pytest.approx(np.nanmean([r[f"jaccard_{c}"] for c in ("background", "good",
                                                                                           "bad")]))
    out = tmp_path / "out"
    for f in ("jaccard_table.md", "patch_size_sweep.csv", "patch_size_sweep.png", "qualitative.png"):
        assert (out / f).is_file(), f
    with open(out / "patch_size_sweep.csv") as f:
        sweep = list(csv.DictReader(f))
    assert [int(s["patch_size"]) for s in sweep] == [32, 48] and set(METHODS) <= set(sweep[0])
    for s in sweep:  # the sweep table is the jaccard table pivoted
        for m in METHODS:
            match = [r["mean_jaccard"] for r in rows if r["method"] == m and r["patch_size"] == int(s["patch_size"])]
            assert float(s[m]) == pytest.approx(match[0])
    # the exported inference weights are the histogram network of the first patch size
    exported = torch.load(tmp_path / "ckpt" / "model.pt", weights_only=True)["model"]
    ref = torch.load(tmp_path / "ckpt" / "histogram_p32" / "model.pt", weights_only=True)["model"]
    assert exported.keys() == ref.keys() and all(torch.equal(exported[k], ref[k]) for k in ref)
    # evaluate-only reloads every trained model and reproduces the scores
    again = IPSHistogramWorkflow(None, tmp_path / "out", tmp_path / "ckpt", methods=METHODS, patch_sizes=(32, 48),
                                 hist_stride=8, save_predictions=False, **TINY).evaluate()
    for a, b in zip(rows, again, strict=True):
        assert a["mean_jaccard"] == pytest.approx(b["mean_jaccard"])


def test_builders():
    wf = IPSHistogramWorkflow(None, "/tmp/unused", "/tmp/unused", patch_stride=2, **TINY)
    assert isinstance(wf.build_inferer("histogram", 32), RegionHistogramInferer)
    assert wf.build_inferer("histogram", 32).stride == (8, 8)
    assert isinstance(wf.build_inferer("patch_classification", 32), CenterPixelInferer)
    net = wf.build_network("patch_classification", 32)
    assert [o.shape for o in net(torch.zeros(2, 1, 32, 32))] == [(2, 3, 1, 1)]
    assert wf.build_network("fcn", 32)(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"methods": ["svm"]}, "methods must be a non-empty subset"),
        ({"methods": []}, "methods must be a non-empty subset"),
        ({"patch_sizes": []}, "at least one patch size"),
        ({"patch_sizes": [40]}, "divisible by 16"),
        ({"patch_sizes": [48], "grid_sizes": (1, 5)}, "divisible by 16"),
        ({"class_names": ["a", "b"]}, "class_names must name"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IPSHistogramWorkflow(None, "/tmp/unused", "/tmp/unused", **{**TINY, **kwargs})


def test_missing_trained_model_is_named(tmp_path):
    wf = IPSHistogramWorkflow(None, tmp_path, tmp_path / "ckpt", **TINY)
    with pytest.raises(FileNotFoundError, match="no trained weights for histogram at patch size 64"):
        wf.load_trained("histogram", 64)
