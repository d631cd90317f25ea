from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from monai_ext.utils import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state


def test_round_trip_model_and_optimizer(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    path = save_checkpoint({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 4}, tmp_path / "a.pt")
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 4
    for k, v in net.state_dict().items():
        torch.testing.assert_close(ckpt["model"][k], v)
    assert ckpt["optimizer"]["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"], "no temporary file may remain"


def test_failed_save_keeps_previous_file(tmp_path):
    path = save_checkpoint({"epoch": 1}, tmp_path / "c.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"epoch": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["c.pt"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "truncated.pt"
    save_checkpoint({"w": torch.arange(1000.0)}, bad)
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(RuntimeError, match="truncated.pt"):
        load_checkpoint(bad)


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"f": random.Random}, path)  # a class reference is not allowed under weights_only=True
    with pytest.raises(RuntimeError, match="obj.pt"):
        load_checkpoint(path)


def test_rng_state_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)  # noqa: NPY002 - the global state is what MONAI transforms draw from
    torch.manual_seed(3)
    path = save_checkpoint({"rng": get_rng_state()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    random.seed(10)
    np.random.seed(20)  # noqa: NPY002
    torch.manual_seed(30)
    set_rng_state(load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected  # noqa: NPY002
