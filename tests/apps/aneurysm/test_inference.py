"""Honest confidence: low-probability flags, the feature out-of-distribution check, and AneurysmInference's
localisation output (probabilities, flags, points mapped back from the template grid, Slicer .fcsv)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_ext.apps.aneurysm.inference import (
    AneurysmInference,
    FeatureDistributionCheck,
    TriPlanarPointInferer,
    flag_low_confidence,
    out_of_distribution_verdict,
)
from monai_ext.apps.aneurysm.landmarks import PointSet, read_points, write_points_json
from monai_ext.networks.nets import MiniVGG
from monai_ext.utils import save_checkpoint


@pytest.mark.parametrize(
    "probs, threshold, expected",
    [([0.9, 0.4, 0.6], 0.5, [False, True, False]), ([0.9, 0.4, 0.6], 0.7, [False, True, True]),
     ([0.1, 0.2], 0.0, [False, False]), ([0.5], 0.5, [False])],
)
def test_flag_low_confidence(probs, threshold, expected, caplog):
    names = [f"L{i}" for i in range(len(probs))]
    with caplog.at_level(logging.WARNING):
        low = flag_low_confidence(names, probs, threshold, source="case")
    assert low.tolist() == expected
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warned) == any(expected)
    if warned:  # one warning naming every flagged landmark and its probability
        assert all((f"{n} ({p:.2f})" in warned[0]) == e for n, p, e in zip(names, probs, expected, strict=True))
    with pytest.raises(ValueError, match="threshold"):
        flag_low_confidence(names, probs, 1.5)
    with pytest.raises(ValueError, match="probabilities"):
        flag_low_confidence(names, probs[:-1] + [0.1, 0.2])


def _closest_mahalanobis(x, means, cov):
    prec = np.linalg.inv(cov)
    return min(float(np.sqrt((x - m) @ prec @ (x - m))) for m in means.values())


def test_feature_check_distances_and_verdicts(tmp_path):
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.5]])
    means = {0: np.zeros(3), 1: np.array([8.0, 0.0, 0.0])}
    y = np.repeat([0, 1], 3000)
    x = np.stack([rng.multivariate_normal(means[k], cov) for k in y])
    check = FeatureDistributionCheck(quantile=0.99).fit(x, y, seed=1)
    probe = np.array([[1.0, 1.0, 1.0], [6.0, -1.0, 0.5], [4.0, 3.0, 0.0]])
    # distance to the closest class, against the true means and covariance (shrinkage is negligible here)
    expected = [_closest_mahalanobis(p, means, cov) for p in probe]
    np.testing.assert_allclose(check.distances(probe), expected, rtol=0.05)
    # the closest of two well separated classes: chi distribution with 3 degrees of freedom, 99 % quantile 3.37
    assert 3.0 < check.threshold < 3.8
    fresh = np.stack([rng.multivariate_normal(means[k], cov) for k in np.repeat([0, 1], 50)])
    ok = check.assess(fresh)
    assert not ok["out_of_distribution"] and ok["fraction_above"] < 0.1
    shifted = check.assess(fresh + np.array([0.0, 6.0, 0.0]))
    assert shifted["out_of_distribution"] and shifted["fraction_above"] > 0.9
    again = FeatureDistributionCheck.load(check.save(tmp_path / "check.json"))
    np.testing.assert_allclose(again.distances(probe), check.distances(probe))
    assert again.threshold == check.threshold


def test_feature_check_holdout_and_errors():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 2)), np.repeat([1, 2], 100)
    wide = FeatureDistributionCheck().fit(x, y, holdout_features=3 * rng.normal(size=(100, 2)))
    tight = FeatureDistributionCheck().fit(x, y)
    assert wide.threshold > 2 * tight.threshold  # a spread-out held-out set raises the threshold
    with pytest.raises(RuntimeError, match="fit"):
        FeatureDistributionCheck().distances(x)
    with pytest.raises(ValueError, match="N >= 10"):
        FeatureDistributionCheck().fit(x[:5], y[:5])
    with pytest.raises(ValueError, match="holdout_features"):
        FeatureDistributionCheck().fit(x, y, holdout_features=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="quantile"):
        FeatureDistributionCheck(quantile=0.0)
    with pytest.raises(FileNotFoundError, match="feature-distribution"):
        FeatureDistributionCheck.load("/nonexistent/check.json")


@pytest.fixture()
def model(tmp_path):
    torch.manual_seed(0)
    net = MiniVGG(2, 3, 4, channels=(4,), hidden_features=8)
    save_checkpoint({"model": net.state_dict()}, tmp_path / "net.pt")
    priors = PointSet(["AC", "PC", "GEN"], [1, 2, 3], np.array([[10.0, 12.0, 14.0], [14.0, 12.0, 10.0],
                                                                [12.0, 16.0, 12.0]]))
    write_points_json(priors, tmp_path / "priors.json")
    return net, priors, tmp_path


def test_localisation_output_maps_back_and_flags(model):
    net, priors, tmp_path = model
    shift = np.eye(4)
    shift[:3, 3] = [100.0, -50.0, 20.0]  # template world -> input world
    original = np.diag([2.0, 2.0, 2.0, 1.0])

    def preprocessing(d):  # stands for AlignToTemplated: image on the template grid plus the map to the input
        img = MetaTensor(torch.rand(1, 28, 28, 28, generator=torch.Generator().manual_seed(0)),
                         affine=torch.eye(4), meta={"original_affine": torch.as_tensor(original)})
        return {"image": img, "template_to_image": shift, "template_alignment": {"start": "centre_of_mass",
                                                                                 "metric": -0.3, "overlap": 1.0}}

    inferer = TriPlanarPointInferer("localise", patch_size=8, search_radius=2, search_step=2)
    check = FeatureDistributionCheck().fit(np.random.default_rng(0).normal(size=(60, 8)), np.repeat([1, 2, 3], 20))
    check.save(tmp_path / "check.json")
    run = AneurysmInference(net, tmp_path / "net.pt", [{"image": "case_1.nii.gz"}], preprocessing, inferer,
                            tmp_path / "out", priors_path=tmp_path / "priors.json", confidence_threshold=0.9,
                            ood_path=tmp_path / "check.json")
    [path] = run.run()
    content = json.loads(path.read_text())
    assert content["confidence_threshold"] == 0.9
    assert content["alignment"] == {"start": "centre_of_mass", "metric": -0.3, "overlap": 1.0}
    lms = content["landmarks"]
    template = np.array([lm["template_position"] for lm in lms])
    # within the search radius of the priors, plus at most one coarse step of refinement beyond it
    assert np.linalg.norm(template - priors.positions, axis=1).max() <= 2.0 + 2.0 + 1e-6
    position = np.array([lm["position"] for lm in lms])
    np.testing.assert_allclose(position, template + shift[:3, 3])
    np.testing.assert_allclose(np.array([lm["voxel"] for lm in lms]), position / 2.0)
    # an untrained 4-class network gives low probabilities: every point is flagged, and counted
    assert all(lm["low_confidence"] == (lm["probability"] < 0.9) for lm in lms)
    assert content["num_low_confidence"] == sum(lm["low_confidence"] for lm in lms)
    verdict = content["out_of_distribution"]
    assert set(verdict["feature_check"]) >= {"out_of_distribution", "fraction_above", "threshold"}
    assert verdict["low_confidence_fraction"] == pytest.approx(content["num_low_confidence"] / 3)
    assert verdict["flagged"] == (verdict["low_confidence_fraction"] >= 0.5
                                  or verdict["feature_check"]["out_of_distribution"])
    fcsv = read_points(path.with_suffix(".fcsv"))
    assert fcsv.names == ["AC", "PC", "GEN"]
    np.testing.assert_allclose(fcsv.positions, position, atol=1e-3)



@pytest.mark.parametrize("overlap, recentred", [(1.0, False), (0.8, True), (None, False)])
def test_auto_recentre_follows_the_alignment_overlap(model, monkeypatch, overlap, recentred):
    """``recentre="auto"`` searches twice exactly when the alignment left part of the template outside the scan,
    and the output says which it did (LandmarkEvaluation copies this ``recentred`` into its per-image table)."""
    import monai_ext.apps.aneurysm.inference as inference_module

    net, priors, tmp_path = model
    calls = []
    real = inference_module.localise_landmarks

    def spy(*args, **kwargs):
        calls.append(kwargs["recentre"])
        return real(*args, **kwargs)

    monkeypatch.setattr(inference_module, "localise_landmarks", spy)

    def preprocessing(d):
        img = MetaTensor(torch.rand(1, 28, 28, 28, generator=torch.Generator().manual_seed(0)), affine=torch.eye(4))
        return {"image": img, **({"template_alignment": {"start": "centre_of_mass", "overlap": overlap}}
                                 if overlap is not None else {})}

    inferer = TriPlanarPointInferer("localise", patch_size=8, search_radius=2, search_step=2, recentre="auto")
    run = AneurysmInference(net, tmp_path / "net.pt", [{"image": "case_1.nii.gz"}], preprocessing, inferer,
                            tmp_path / "out", priors_path=tmp_path / "priors.json")
    content, _ = run.process({"image": "case_1.nii.gz"})
    assert calls == [recentred]
    assert content["recentred"] is recentred
    assert content["model"]["search"]["recentre"] == "auto"


def test_recentre_mode_and_threshold_are_checked():
    from monai_ext.apps.aneurysm import RECENTRE_OVERLAP, recentre_mode

    assert [recentre_mode(v) for v in ("auto", " Auto", "true", "0", False)] == ["auto", "auto", True, False, False]
    with pytest.raises(ValueError, match="search_recentre must be true, false or 'auto', got 'sometimes'"):
        recentre_mode("sometimes", "search_recentre")
    inferer = TriPlanarPointInferer(recentre="auto", recentre_overlap=0.9)
    assert [inferer.recentres(v) for v in (0.89, 0.9, 1.0, None, float("nan"))] == [True, False, False, False,
                                                                                      False]
    assert TriPlanarPointInferer(recentre=True).recentres(None) is True
    assert TriPlanarPointInferer(recentre="false").recentres(0.1) is False
    assert TriPlanarPointInferer(recentre="auto").recentre_overlap == RECENTRE_OVERLAP
    for bad in (0.0, 1.5, True, "0.9"):
        with pytest.raises(ValueError, match="recentre_overlap"):
            TriPlanarPointInferer(recentre="auto", recentre_overlap=bad)
    with pytest.raises(ValueError, match="recentre must be true, false or 'auto'"):
        TriPlanarPointInferer(recentre="maybe")


def test_protocol_planes_move_the_ventricle_points_into_the_found_planes(tmp_path):
    """``protocol_planes``: the lateral-ventricle points end in the coronal plane of the found AC / PC of the input
    (perpendicular to the found AC-PC line in input millimetres, at the priors' offsets), the other points are
    the search's; voxel, template position and the reported distance follow the moved point."""
    from monai_ext.apps.aneurysm import protocol_plane_offsets

    torch.manual_seed(0)
    net = MiniVGG(2, 3, 5, channels=(4,), hidden_features=8)
    save_checkpoint({"model": net.state_dict()}, tmp_path / "net.pt")
    names = ["AC", "PC", "RLVAC", "LLVPC"]
    priors = PointSet(names, [1, 2, 3, 4], np.array([[14.0, 18.0, 10.0], [14.0, 8.0, 11.0], [20.0, 19.0, 20.0],
                                                     [8.0, 7.0, 21.0]]))
    write_points_json(priors, tmp_path / "priors.json")
    matrix = np.eye(4)  # template -> input: rotated, anisotropically scaled and shifted
    c, s_ = np.cos(0.4), np.sin(0.4)
    matrix[:3, :3] = np.array([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.1, 0.9, 1.0])
    matrix[:3, 3] = [30.0, -10.0, 5.0]
    original = np.diag([1.5, 1.5, 1.5, 1.0])

    def preprocessing(d):
        img = MetaTensor(torch.rand(1, 28, 28, 28, generator=torch.Generator().manual_seed(0)), affine=torch.eye(4),
                         meta={"original_affine": torch.as_tensor(original)})
        return {"image": img, "template_to_image": matrix}

    def run(protocol_planes):
        inferer = TriPlanarPointInferer("localise", patch_size=8, search_radius=3, search_step=2,
                                        protocol_planes=protocol_planes)
        infer = AneurysmInference(net, tmp_path / "net.pt", [{"image": "case_1.nii.gz"}], preprocessing, inferer,
                                  tmp_path / "out", priors_path=tmp_path / "priors.json")
        return infer.process({"image": "case_1.nii.gz"})[0]

    plain, placed = run(False), run("true")  # a command line's "true" is a string
    assert placed["model"]["search"]["protocol_planes"] is True
    assert plain["model"]["search"]["protocol_planes"] is False
    assert all("moved_to_protocol_plane_mm" not in lm for lm in plain["landmarks"])
    before = np.array([lm["position"] for lm in plain["landmarks"]])
    after = np.array([lm["position"] for lm in placed["landmarks"]])
    np.testing.assert_allclose(after[:2], before[:2])  # AC and PC are the search's
    offsets = protocol_plane_offsets(priors.positions, names)
    found = protocol_plane_offsets(after, names)
    for name in ("RLVAC", "LLVPC"):
        assert found[name] == pytest.approx(offsets[name], abs=1e-9)
    moved = np.array([lm["moved_to_protocol_plane_mm"] for lm in placed["landmarks"]])
    np.testing.assert_allclose(moved, np.linalg.norm(after - before, axis=1), atol=1e-9)
    assert moved[2:].min() > 0 and not moved[:2].any()
    template = np.array([lm["template_position"] for lm in placed["landmarks"]])
    np.testing.assert_allclose(template @ matrix[:3, :3].T + matrix[:3, 3], after, atol=1e-9)
    np.testing.assert_allclose(np.array([lm["voxel"] for lm in placed["landmarks"]]), after / 1.5, atol=1e-9)
    assert [lm["probability"] for lm in placed["landmarks"]] == [lm["probability"] for lm in plain["landmarks"]]
    with pytest.raises(ValueError, match="protocol_planes"):
        TriPlanarPointInferer(protocol_planes="sometimes")


def test_result_files_keep_dotted_names_apart_and_refuse_clashes(model):
    """``sub01.T1w.nii.gz`` and ``sub01.T2w.nii.gz`` write their own result files (the stem drops the image
    extension only); two inputs whose results would share a name stop the run before any is processed."""
    from monai_ext.apps.aneurysm import image_stem

    net, _, tmp_path = model

    def preprocessing(d):
        return {"image": MetaTensor(torch.rand(1, 28, 28, 28, generator=torch.Generator().manual_seed(0)),
                                    affine=torch.eye(4))}

    inferer = TriPlanarPointInferer("localise", patch_size=8, search_radius=2, search_step=2)
    items = [{"image": "/scans/sub01.T1w.nii.gz"}, {"image": "/scans/sub01.T2w.NII.GZ"}, {"image": "/dicom/sub01"}]
    assert [image_stem(i["image"]) for i in items] == ["sub01.T1w", "sub01.T2w", "sub01"]
    run = AneurysmInference(net, tmp_path / "net.pt", items[:2], preprocessing, inferer, tmp_path / "dotted",
                            priors_path=tmp_path / "priors.json")
    assert sorted(p.name for p in run.run()) == ["sub01.T1w_localise.json", "sub01.T2w_localise.json"]
    assert sorted(p.name for p in (tmp_path / "dotted").glob("*.fcsv")) == ["sub01.T1w_localise.fcsv",
                                                                           "sub01.T2w_localise.fcsv"]
    clash = [{"image": "/site_a/sub01.nii.gz"}, {"image": "/site_b/sub01.nii.gz"}]
    run = AneurysmInference(net, tmp_path / "net.pt", clash, preprocessing, inferer, tmp_path / "clash",
                            priors_path=tmp_path / "priors.json")
    with pytest.raises(ValueError, match=r"inputs '/site_a/sub01.nii.gz' and '/site_b/sub01.nii.gz' would write "
                       r"the same result files 'sub01_localise\.\*'"):
        run.run()
    assert not (tmp_path / "clash").exists()  # nothing written

def test_point_inferer_batch_size():
    """``batch_size=None`` picks the device's default; the classify mode gives the same probabilities with any
    batch size; a bad value fails when the inferer is built, naming it."""
    from monai_ext.networks.nets import MiniVGG

    torch.manual_seed(0)
    net = MiniVGG(spatial_dims=2, in_channels=3, num_classes=3, channels=(4, 8), hidden_features=8).eval()
    image = torch.rand(1, 20, 20, 20, generator=torch.Generator().manual_seed(1))
    points = np.array([[10.0, 10.0, 10.0], [8.0, 12.0, 9.0], [11.0, 7.0, 13.0]])
    want = TriPlanarPointInferer("classify", patch_size=8)(image, net, points=points)
    got = TriPlanarPointInferer("classify", patch_size=8, batch_size=2)(image, net, points=points)
    assert want.shape == (3, 3)
    torch.testing.assert_close(got, want)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="batch_size"):
            TriPlanarPointInferer("localise", batch_size=bad)


def test_inference_rejects_bad_threshold(model):
    net, _, tmp_path = model
    with pytest.raises(ValueError, match="confidence_threshold"):
        AneurysmInference(net, tmp_path / "net.pt", [], lambda d: d, TriPlanarPointInferer(), tmp_path,
                          confidence_threshold=2.0)


@pytest.mark.parametrize(
    "low, feature, flagged, n_reasons",
    [([True, True, False], None, True, 1), ([True, False, False, False], None, False, 0),
     ([False] * 4, {"out_of_distribution": True, "fraction_above": 0.8, "median_distance": 20.0, "threshold": 9.0},
      True, 1),
     ([True] * 4, {"out_of_distribution": True, "fraction_above": 0.8, "median_distance": 20.0, "threshold": 9.0},
      True, 2),
     ([False] * 4, {"out_of_distribution": False, "fraction_above": 0.1, "median_distance": 5.0, "threshold": 9.0},
      False, 0)],
)
def test_out_of_distribution_verdict(low, feature, flagged, n_reasons):
    v = out_of_distribution_verdict(low, 0.5, feature)
    assert v["flagged"] == flagged and len(v["reasons"]) == n_reasons
    assert v["low_confidence_fraction"] == pytest.approx(np.mean(low))
    with pytest.raises(ValueError, match="max_low_fraction"):
        out_of_distribution_verdict(low, 0.0)


def test_feature_reason_states_the_threshold_and_median_as_they_are():
    """Half of the centres beyond the threshold flags the image even when the median is just below it: the reason
    must not claim the median exceeds the threshold (it read "median 13.9 > 14.1" before)."""
    feature = {"out_of_distribution": True, "fraction_above": 0.5, "median_distance": 13.9, "threshold": 14.1}
    [reason] = out_of_distribution_verdict([False] * 4, 0.5, feature)["reasons"]
    assert reason == ("50% of the search centres have features beyond the training threshold (Mahalanobis distance "
                      "> 14.1; median 13.9)")
