from __future__ import annotations

import json

import pytest
import torch
from monai.data import MetaTensor

from monai_ext.data import load_datalist, resolve_datalist


def _write(tmp_path, content):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(content) if not isinstance(content, str) else content)
    return path


def test_relative_paths_resolved_and_checked(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.nii.gz").write_bytes(b"x")
    path = _write(tmp_path, {"training": [{"image": "img/a.nii.gz", "label": 1}]})
    items = load_datalist(tmp_path, "training", required_keys=("image", "label"), path_keys=("image",))
    assert items == [{"image": str(tmp_path / "img" / "a.nii.gz"), "label": 1}]
    assert load_datalist(path)[0]["image"] == str(tmp_path / "img" / "a.nii.gz")


@pytest.mark.parametrize(
    "content, kwargs, error, match",
    [
        ("{not json", {}, ValueError, "is not valid JSON"),
        ({"validation": []}, {}, ValueError, r"no section 'training' \(found: \['validation'\]\)"),
        ({"training": {"image": "a"}}, {}, ValueError, "must be a list"),
        ({"training": [{"label": "a"}]}, {}, ValueError, r"item 0 lacks key\(s\) \['image'\]"),
        ({"training": [{"image": "nope.nii.gz"}]}, {}, FileNotFoundError, "item 0 key 'image': file not found"),
    ],
)
def test_bad_datalists(tmp_path, content, kwargs, error, match):
    _write(tmp_path, content)
    with pytest.raises(error, match=match):
        load_datalist(tmp_path, **kwargs)


def test_missing_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="datalist JSON not found"):
        load_datalist(tmp_path / "x.json")


def test_resolve_generates_once_and_regenerates_on_new_kwargs(tmp_path):
    calls = []

    def generator(out, seed=0):
        calls.append(seed)
        (out / "dataset.json").write_text(json.dumps({"training": [], "seed": seed}))

    first = resolve_datalist(None, tmp_path, generator, {"seed": 1})
    again = resolve_datalist("", tmp_path, generator, {"seed": 1})
    assert first == again == tmp_path / "synthetic_data" / "dataset.json"
    assert calls == [1]
    resolve_datalist("synthetic", tmp_path, generator, {"seed": 2})
    assert calls == [1, 2]


def test_resolve_user_dataset(tmp_path):
    _write(tmp_path, {"training": []})
    assert resolve_datalist(str(tmp_path), "unused", lambda out: None) == tmp_path / "dataset.json"
    with pytest.raises(FileNotFoundError, match="holds no datalist"):
        resolve_datalist(str(tmp_path / "empty"), "unused", lambda out: None)


def test_generator_that_writes_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="did not write"):
        resolve_datalist(None, tmp_path, lambda out: None)


def test_output_name_is_the_name_save_imaged_writes(tmp_path):
    from monai.transforms import SaveImage

    from monai_ext.data import output_name

    save = SaveImage(output_dir=tmp_path, output_postfix="seg", output_ext=".nii.gz", separate_folder=False,
                     resample=False, print_log=False)
    for name in ("sub01.T1w.nii.gz", "colony.3.png", "plain.nii", "noext"):
        save(MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": f"/data/{name}"}))
        assert (tmp_path / f"{output_name('/data/' + name)}_seg.nii.gz").is_file(), name
    assert output_name("/data/sub01.T1w.nii.gz") == "sub01.T1w"


def test_check_output_names_refuses_clashes_and_names_them():
    from monai_ext.data import check_output_names

    items = [{"image": "/a/x.png"}, {"image": "/a/x.1.png"}, {"image": "/b/y.tif"}]
    assert check_output_names(items) is items
    clash = items + [{"image": "/c/x.nii.gz"}, {"image": "/d/y.png"}]
    with pytest.raises(ValueError, match=r"4 images would write .*'x' from \['/a/x.png', '/c/x.nii.gz'\]; "
                                         r"'y' from \['/b/y.tif', '/d/y.png'\]"):
        check_output_names(clash)
    with pytest.raises(ValueError, match="item 1 has no key 'image'"):
        check_output_names([{"image": "a.png"}, {"label": "b.png"}])
