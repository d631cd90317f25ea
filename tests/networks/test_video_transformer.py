from __future__ import annotations

import math

import pytest
import torch
from _network_checks import (
    assert_all_parameters_get_gradients,
    assert_eval_deterministic,
    assert_torchscript_round_trip,
)

from monai_ext.networks.nets import TimeSformer, timesformer_base, timesformer_small, timesformer_tiny
from monai_ext.networks.nets.video_transformer import _Attention

TINY = {"hidden_size": 24, "num_layers": 2, "num_heads": 3}


@pytest.mark.parametrize(
    "kwargs,in_shape,out_shape",
    [
        ({"img_size": 32, "num_frames": 4, "patch_size": 8, "num_classes": 5, **TINY}, (2, 3, 4, 32, 32), (2, 5)),
        ({"img_size": (16, 24), "num_frames": 1, "patch_size": 8, "in_channels": 1, "num_classes": 2, **TINY},
         (1, 1, 1, 16, 24), (1, 2)),
        ({"img_size": 16, "num_frames": 3, "patch_size": 4, "num_classes": 0, **TINY}, (2, 3, 3, 16, 16), (2, 24)),
    ],
)  # fmt: skip
def test_shapes(kwargs, in_shape, out_shape):
    net = TimeSformer(**kwargs).eval()
    with torch.no_grad():
        assert net(torch.randn(in_shape)).shape == out_shape


@pytest.mark.parametrize(
    "factory,width,heads", [(timesformer_tiny, 192, 3), (timesformer_small, 384, 6), (timesformer_base, 768, 12)]
)
def test_named_sizes(factory, width, heads):
    with torch.device("meta"):  # full-size architecture without allocating or initialising its weights
        net = factory(img_size=32, num_frames=2, patch_size=16, num_classes=3)
    assert net.hidden_size == width and len(net.blocks) == 12
    assert net.blocks[0].spatial_attn.num_heads == heads
    shallow = factory(img_size=32, num_frames=2, patch_size=16, num_classes=3, num_layers=1)
    assert len(shallow.blocks) == 1
    with torch.no_grad():
        assert shallow.eval()(torch.randn(1, 3, 2, 32, 32)).shape == (1, 3)


def test_attention_matches_naive_softmax():
    """``_Attention`` against an explicit per-head softmax(QK^T / sqrt(d)) V loop."""
    torch.manual_seed(0)
    attn = _Attention(12, 3, qkv_bias=True, attn_drop=0.0, proj_drop=0.0).eval()
    x = torch.randn(2, 5, 12)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    heads = []
    for h in range(3):
        sl = slice(4 * h, 4 * h + 4)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(4), dim=-1)
        heads.append(w @ v[..., sl])
    expected = attn.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_temporal_branch_is_zero_at_init():
    """Zero-initialised temporal projection: at init, frames interact only through the CLS token."""
    torch.manual_seed(0)
    net = TimeSformer(img_size=16, num_frames=3, patch_size=8, num_classes=2, **TINY)
    for blk in net.blocks:
        assert torch.count_nonzero(blk.temporal_attn.proj.weight) == 0
        assert torch.count_nonzero(blk.temporal_attn(torch.randn(4, 3, 24))) == 0


def _load_into_hf(ours: TimeSformer, hf) -> None:
    """Copy our weights into ``transformers.TimesformerModel`` (its extra ``temporal_dense`` set to the identity)."""
    sd = {
        "embeddings.cls_token": ours.cls_token,
        "embeddings.position_embeddings": ours.pos_embed,
        "embeddings.time_embeddings": ours.time_embed[:, :, 0],
        "embeddings.patch_embeddings.projection.weight": ours.patch_embed.weight,
        "embeddings.patch_embeddings.projection.bias": ours.patch_embed.bias,
        "layernorm.weight": ours.norm.weight,
        "layernorm.bias": ours.norm.bias,
    }
    names = {
        "temporal_layernorm": "temporal_norm",
        "temporal_attention.attention.qkv": "temporal_attn.qkv",
        "temporal_attention.output.dense": "temporal_attn.proj",
        "layernorm_before": "spatial_norm",
        "attention.attention.qkv": "spatial_attn.qkv",
        "attention.output.dense": "spatial_attn.proj",
        "layernorm_after": "mlp_norm",
        "intermediate.dense": "mlp.0",
        "output.dense": "mlp.3",
    }
    ours_sd = ours.state_dict()
    d = ours.hidden_size
    for i in range(len(ours.blocks)):
        for hf_name, our_name in names.items():
            for p in ("weight", "bias"):
                sd[f"encoder.layer.{i}.{hf_name}.{p}"] = ours_sd[f"blocks.{i}.{our_name}.{p}"]
        sd[f"encoder.layer.{i}.temporal_dense.weight"] = torch.eye(d)
        sd[f"encoder.layer.{i}.temporal_dense.bias"] = torch.zeros(d)
    hf.load_state_dict(sd)


def test_matches_hugging_face_timesformer():
    """Independent reference: Hugging Face's TimeSformer with the same weights gives the same CLS features."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ours = TimeSformer(img_size=16, num_frames=3, patch_size=8, num_classes=0, **TINY).eval()
    for blk in ours.blocks:  # make the temporal branch non-trivial
        torch.nn.init.normal_(blk.temporal_attn.proj.weight, std=0.1)
    config = transformers.TimesformerConfig(
        image_size=16, patch_size=8, num_frames=3, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=96, hidden_act="gelu", layer_norm_eps=1e-6, attention_type="divided_space_time",
    )  # fmt: skip
    hf = transformers.TimesformerModel(config).eval()
    _load_into_hf(ours, hf)
    x = torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        expected = hf(pixel_values=x.transpose(1, 2)).last_hidden_state[:, 0]
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-5)


def test_gradients_eval_and_export(tmp_path):
    torch.manual_seed(0)
    net = TimeSformer(img_size=16, num_frames=2, patch_size=8, num_classes=3, dropout_rate=0.1, drop_path_rate=0.1,
                      **TINY)  # fmt: skip
    for blk in net.blocks:  # zero init blocks gradients into the temporal qkv; perturb to check the wiring
        torch.nn.init.normal_(blk.temporal_attn.proj.weight, std=0.02)
    x = torch.randn(2, 3, 2, 16, 16)
    assert_all_parameters_get_gradients(net, x)
    assert_eval_deterministic(net, x)
    assert_torchscript_round_trip(net, x, tmp_path)
    assert_torchscript_round_trip(net, x, tmp_path, use_trace=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"img_size": 30, "patch_size": 8}, r"img_size \(30, 30\) must be divisible by patch_size=8"),
        ({"img_size": (32, 20), "patch_size": 8}, "divisible by patch_size"),
        ({"img_size": (32, 32, 32)}, "img_size must be an int or a pair"),
        ({"hidden_size": 20, "num_heads": 3}, "hidden_size=20 must be divisible by num_heads=3"),
        ({"num_frames": 0}, "num_frames"),
        ({"num_layers": 0}, "num_layers"),
        ({"num_classes": -1}, "num_classes"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TimeSformer(**kwargs)


def test_bad_inputs():
    net = TimeSformer(img_size=16, num_frames=2, patch_size=8, num_classes=3, **TINY).eval()
    with pytest.raises(ValueError, match="expected num_frames=2 frames"):
        net(torch.zeros(1, 3, 3, 16, 16))
    with pytest.raises(ValueError, match=r"img_size=\(16, 16\)"):
        net(torch.zeros(1, 3, 2, 16, 24))
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        net(torch.zeros(1, 3, 16, 16))
