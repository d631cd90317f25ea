"""Every network exports with ``monai.bundle ckpt_export`` (the bundles' TorchScript path) and reloads equal."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out

CASES = [
    # target, constructor args, input shape, use_trace
    ("MiniVGG", {"num_classes": 4, "channels": [4, 8], "hidden_features": 8}, [2, 3, 32, 32], False),
    ("HistogramNet", {"patch_size": 32, "channels": [4, 8, 8]}, [2, 1, 32, 32], False),
    ("TimeLapseNet", {"channels": [4, 8], "attention_dim": 8, "proj_dim": 4}, [2, 1, 3, 32, 32], False),
    ("timesformer_small", {"img_size": 16, "num_frames": 2, "patch_size": 8, "num_classes": 3, "num_layers": 1},
     [1, 3, 2, 16, 16], False),
    ("timesformer_tiny", {"img_size": 16, "num_frames": 2, "patch_size": 8, "num_classes": 3, "num_layers": 1},
     [1, 3, 2, 16, 16], True),
    ("Tiny3DCNN", {"num_classes": 3, "channels": [4, 8]}, [1, 3, 4, 16, 16], False),
    ("ResNetTemporalPool", {"num_classes": 3, "layers": [1, 1, 1, 1], "channels": [4, 4, 8, 8]}, [1, 3, 2, 16, 16],
     False),
    ("R2Plus1D", {"num_classes": 3, "layers": [1, 1, 1, 1], "channels": [4, 4, 8, 8]}, [1, 3, 4, 16, 16], True),
]  # fmt: skip


def _flat(out):
    return out.reshape(-1) if isinstance(out, torch.Tensor) else torch.cat([o.reshape(-1) for o in out])


@pytest.mark.parametrize("target,args,shape,use_trace", CASES)
def test_ckpt_export(target, args, shape, use_trace, tmp_path):
    config = {"network_def": {"_target_": f"monai_ext.networks.nets.{target}", **args}}
    (tmp_path / "inference.json").write_text(json.dumps(config))
    (tmp_path / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    parser = ConfigParser(config)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(tmp_path / "model.pt"),
        meta_file=str(tmp_path / "metadata.json"),
        config_file=str(tmp_path / "inference.json"),
        use_trace=use_trace,
        input_shape=shape,
    )
    loaded = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(_flat(loaded(x)), _flat(net(x)), rtol=1e-5, atol=1e-6)


VERIFY_CASES = [
    # target, constructor args, input channels, spatial shape, output channels
    ("MiniVGG", {"num_classes": 4, "channels": [4, 8], "hidden_features": 8}, 3, [32, 32], 4),
    ("FlatHistogramNet", {"patch_size": 32, "channels": [4, 8, 8], "num_classes": 3}, 1, [32, 32], 3),
    ("TimeLapseNet", {"channels": [4, 8], "attention_dim": 8, "proj_dim": 4}, 1, [3, 32, 32], 1),
    ("timesformer_tiny", {"img_size": 16, "num_frames": 2, "patch_size": 8, "num_classes": 5, "num_layers": 1}, 3,
     [2, 16, 16], 5),
    ("Tiny3DCNN", {"num_classes": 3, "channels": [4, 8]}, 3, [4, 16, 16], 3),
]  # fmt: skip


@pytest.mark.parametrize("target,args,in_channels,spatial_shape,out_channels", VERIFY_CASES)
def test_verify_net_in_out(target, args, in_channels, spatial_shape, out_channels, tmp_path):
    """``monai.bundle verify_net_in_out`` reads ``output.shape[1]``: single-tensor outputs in MONAI's layout."""
    config = {"network_def": {"_target_": f"monai_ext.networks.nets.{target}", **args}}
    meta = {
        "network_data_format": {
            "inputs": {"image": {"num_channels": in_channels, "spatial_shape": spatial_shape, "dtype": "float32"}},
            "outputs": {"pred": {"num_channels": out_channels, "dtype": "float32"}},
        }
    }
    (tmp_path / "inference.json").write_text(json.dumps(config))
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(tmp_path / "metadata.json"),
        config_file=str(tmp_path / "inference.json"),
        device="cpu",
    )
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = out_channels + 1
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(tmp_path / "metadata.json"),
            config_file=str(tmp_path / "inference.json"),
            device="cpu",
        )
