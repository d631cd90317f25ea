from __future__ import annotations

import json

import pytest
import torch

from monai_ext.utils import default_device, find_bundle_root


def _make_bundle(root, name):
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text(json.dumps({"name": name}))
    return root


@pytest.mark.parametrize("start", ["repo", "bundles", "bundle", "bundle/configs"])
def test_find_bundle_root_from_anywhere_in_the_repo(tmp_path, start):
    bundle = _make_bundle(tmp_path / "bundles" / "demo", "demo")
    where = {"repo": tmp_path, "bundles": tmp_path / "bundles", "bundle": bundle, "bundle/configs": bundle / "configs"}
    assert find_bundle_root("demo", start=where[start]) == str(bundle.resolve())


def test_find_bundle_root_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot find bundle 'other'.*--bundle_root"):
        find_bundle_root("other", start=tmp_path)


def test_default_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert default_device().type == expected
    assert default_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            default_device("cuda")
