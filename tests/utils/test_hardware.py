"""Tests of the CPU/GPU capability probe and the precision calibration (mocked capabilities and timings)."""

from __future__ import annotations

import pytest
import torch

from monai_ext.utils import ISA_CAP_ENVIRONMENT, HardwareInfo, calibrate_precision, make_precision_variant
from monai_ext.utils import probe_hardware as probe

SPR = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f "
       "avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n\nprocessor\t: 1\nflags\t\t: fpu\n")
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
ICX = "model name\t: Intel Xeon Gold 6338\nflags\t\t: avx2 avx512f avx512bw avx512_vnni\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU part\t: 0xd40\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd\n"


@pytest.mark.parametrize(
    "cpuinfo,environ,aten,arch,native,reason",
    [
        (SPR, {}, "AVX512", "x86_64", True, "amx_bf16+avx512_bf16"),
        (EPYC, {}, "AVX2", "x86_64", False, "neither avx512_bf16 nor amx_bf16"),
        (ICX, {}, "AVX512", "x86_64", False, "neither avx512_bf16 nor amx_bf16"),  # AVX-512 without bf16
        (SPR, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX512", "x86_64", False, "oneDNN capped at AVX2"),
        (SPR, {"DNNL_MAX_CPU_ISA": "avx512_core_vnni"}, "AVX512", "x86_64", False, "capped at AVX512_CORE_VNNI"),
        (SPR, {"ONEDNN_MAX_CPU_ISA": "avx512_core_bf16"}, "AVX512", "x86_64", True, "amx_bf16"),
        (SPR, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, "AVX512", "x86_64", True, "amx_bf16"),  # alias name
        (SPR, {"ONEDNN_MAX_CPU_ISA": "ALL"}, "AVX512", "x86_64", True, "amx_bf16"),
        (SPR, {"ONEDNN_MAX_CPU_ISA": "NEWEST_THING"}, "AVX512", "x86_64", False, "unknown oneDNN cap"),
        (SPR, {"ATEN_CPU_CAPABILITY": "avx2"}, "AVX2", "x86_64", False, "ATen capped at AVX2"),
        (SPR, ISA_CAP_ENVIRONMENT["avx2"], "AVX2", "x86_64", False, "oneDNN capped at AVX2"),
        (SPR, ISA_CAP_ENVIRONMENT["avx512"], "AVX512", "x86_64", False, "AVX512_CORE_VNNI"),
        (ARM_BF16, {}, "DEFAULT", "aarch64", True, "bf16 extension"),
        (ARM, {}, "DEFAULT", "aarch64", False, "without the bf16 extension"),
        ("", {}, "DEFAULT", "riscv64", False, "unknown on riscv64"),
    ],
)
def test_probe_cpu_bf16(cpuinfo, environ, aten, arch, native, reason):
    info = probe("cpu", cpuinfo=cpuinfo, environ=environ, aten_capability=aten, arch=arch)
    assert info.native_bf16 is native and reason in info.bf16_reason
    assert info.device == "cpu" and info.threads == torch.get_num_threads() and info.cpu_count >= 1
    summary = info.summary()
    assert f"native bf16: {'yes' if native else 'no'}" in summary
    for k, v in environ.items():  # every cap in effect is reported
        assert info.isa_caps[k] == v and f"{k}={v}" in summary


def test_probe_reads_model_name_and_first_processor_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(SPR)
    info = probe("cpu", cpuinfo=path, environ={}, aten_capability="AVX512", arch="x86_64")
    assert info.name == "Intel(R) Xeon(R) Platinum 8480+"
    assert info.flags == {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
    assert "AVX2:yes AVX-512:yes AVX-512-BF16:yes AMX-BF16:yes" in info.summary()
    epyc = probe("cpu", cpuinfo=EPYC, environ={}, aten_capability="AVX2", arch="x86_64")
    assert epyc.name == "AMD EPYC 7B12" and "AVX2:yes AVX-512:no AVX-512-BF16:no AMX-BF16:no" in epyc.summary()


@pytest.mark.parametrize("capability,native", [((8, 0), True), ((9, 0), True), ((7, 5), False), ((6, 1), False)])
def test_probe_cuda_bf16(capability, native):
    info = probe("cuda:1", cpuinfo=EPYC, environ={}, cuda_capability=capability)
    assert info.device == "cuda:1" and info.native_bf16 is native
    assert f"compute capability {capability[0]}.{capability[1]}" in info.bf16_reason


def test_probe_errors():
    with pytest.raises(ValueError, match="device must be 'cpu' or a CUDA device, got 'meta'"):
        probe("meta", cpuinfo=EPYC)


# -------------------------------------------------------------------------------------------- calibration
def hardware(native_bf16: bool, device: str = "cpu") -> HardwareInfo:
    return HardwareInfo(device=device, name="mock", arch="x86_64", flags=frozenset(), isa_caps={},
                        aten_capability="AVX2", native_bf16=native_bf16, bf16_reason="mocked", threads=1, cpu_count=2)


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 5))

    def forward(self, x):
        return self.body(x)


def fake_times(ms: dict[str, float]):
    """A ``measure`` that reports the given milliseconds per batch and records what it was asked to time."""
    asked = []

    def measure(variant, run):
        run()
        asked.append(variant)
        return ms[variant] / 1000

    return measure, asked


def softmax(y):
    return torch.softmax(y, -1)


@pytest.mark.parametrize(
    "native,times,expected",
    [
        (False, {"fp32": 10, "bf16": 1, "int8": 6}, "int8"),  # bf16 would be fastest but is emulated: never taken
        (False, {"fp32": 10, "bf16": 1, "int8": 12}, "fp32"),
        (True, {"fp32": 10, "bf16": 4, "int8": 6}, "bf16"),
        (True, {"fp32": 10, "bf16": 7, "int8": 6}, "int8"),
        (True, {"fp32": 10, "bf16": 9.8, "int8": 9.7}, "fp32"),  # < min_speedup 1.05: keep the reference
        (True, {"fp32": 10, "bf16": 30, "int8": 40}, "fp32"),
    ],
)
def test_calibration_picks_the_fastest_allowed_variant(native, times, expected):
    measure, asked = fake_times(times)
    x = torch.rand(4, 16)
    choice = calibrate_precision(MLP().eval(), x, hardware(native), tolerance=0.5, output_transform=softmax,
                                 measure=measure)
    assert choice.variant == expected
    assert ("bf16" in asked) is native and ("bf16" in choice.skipped) is not native
    if not native:
        assert "no native bf16" in choice.skipped["bf16"]
    assert choice.ms_per_clip == {v: times[v] / 4 for v in asked}  # per sample of the batch of 4
    assert choice.autocast_dtype == (torch.bfloat16 if expected == "bf16" else None)
    is_quantised = any("quantized" in type(m).__module__ for m in choice.network.modules())
    assert is_quantised is (expected == "int8")
    assert f"precision {expected}" in choice.summary()


def test_int8_only_within_tolerance_of_fp32():
    net, x = MLP().eval(), torch.randn(8, 16) * 3
    with torch.no_grad():
        qnet, _ = make_precision_variant(net, "int8")
        diff = float((softmax(qnet(x)) - softmax(net(x))).abs().max())  # independent of the calibration's code
    assert 0 < diff < 0.2
    times = {"fp32": 10, "int8": 2}
    strict = calibrate_precision(net, x, hardware(False), tolerance=diff / 2, output_transform=softmax,
                                 measure=fake_times(times)[0])
    assert strict.variant == "fp32" and "outputs differ from fp32" in strict.skipped["int8"]
    assert strict.max_abs_diff["int8"] == pytest.approx(diff, rel=1e-5) and "int8" not in strict.ms_per_clip
    loose = calibrate_precision(net, x, hardware(False), tolerance=diff * 2, output_transform=softmax,
                                measure=fake_times(times)[0])
    assert loose.variant == "int8" and loose.max_abs_diff["fp32"] == 0.0
    with torch.no_grad():  # the chosen network is the quantised one and the input network is untouched
        torch.testing.assert_close(softmax(loose.network(x)), softmax(qnet(x)))
        assert all(type(m) is not torch.nn.Linear for m in loose.network.modules())
        assert sum(type(m) is torch.nn.Linear for m in net.modules()) == 2


def test_calibration_skips_int8_without_linear_layers_or_on_gpu():
    conv = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten()).eval()
    x = torch.rand(2, 1, 8)
    measure, asked = fake_times({"fp32": 5, "int8": 1})
    choice = calibrate_precision(conv, x, hardware(False), measure=measure)
    assert choice.variant == "fp32" and asked == ["fp32"] and "no nn.Linear" in choice.skipped["int8"]
    gpu = calibrate_precision(MLP().eval(), torch.rand(2, 16), hardware(False, "cuda:0"),
                              measure=fake_times({"fp32": 5, "int8": 1})[0], tolerance=0.5)
    assert gpu.variant == "fp32" and "CPU only" in gpu.skipped["int8"]


def test_calibration_times_for_real():
    choice = calibrate_precision(MLP().eval(), torch.rand(4, 16), hardware(False), repeats=1, tolerance=0.5)
    assert set(choice.ms_per_clip) == {"fp32", "int8"} and all(v > 0 for v in choice.ms_per_clip.values())


@pytest.mark.parametrize(
    "kwargs,match",
    [({"candidates": ("fp32", "fp16")}, "candidates must be among"), ({"tolerance": 0}, "tolerance > 0"),
     ({"repeats": 0}, "repeats >= 1"), ({"min_speedup": 0.9}, "min_speedup >= 1")],
)
def test_calibration_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        calibrate_precision(MLP(), torch.rand(2, 16), hardware(False), **kwargs)
    with pytest.raises(ValueError, match="precision must be one of"):
        make_precision_variant(MLP(), "fp16")
