"""What the machine can do fast: a CPU/GPU capability probe and a precision calibration for inference.

bfloat16 autocast is only a speed-up where the hardware computes in bf16: on x86 the ``avx512_bf16`` or AMX
(``amx_bf16``) instructions, on Arm the ``bf16`` extension, on NVIDIA GPUs compute capability 8.0 (Ampere) or newer.
Elsewhere oneDNN and ATen *emulate* bf16 by converting to fp32 and back around every operation, which is several
times slower than plain fp32 (measured 3-9x on AVX2-only CPUs, see the sperm_emd stream benchmark). Int8 dynamic
quantisation of ``nn.Linear`` layers (Jacob et al., "Quantization and training of neural networks for efficient
integer-arithmetic-only inference", CVPR 2018; PyTorch ``quantize_dynamic``) helps transformers on most x86 CPUs,
but not every network and not on GPUs.

:func:`probe_hardware` reads the CPU flags (``/proc/cpuinfo``), the instruction-set caps set through the
environment (``ONEDNN_MAX_CPU_ISA``/``DNNL_MAX_CPU_ISA`` for oneDNN, ``ATEN_CPU_CAPABILITY`` for ATen's own kernels),
torch's thread count and, for a CUDA device, its compute capability, and says whether bf16 is native.
:func:`calibrate_precision` times a network in fp32, bf16 autocast (only where native) and int8 dynamic quantisation
(only on CPU, only with ``nn.Linear`` layers) on a dummy batch, rejects a variant whose outputs differ from fp32 by
more than a tolerance, and keeps the fastest. :data:`ISA_CAP_ENVIRONMENT` lists the variables that make this machine
behave like an older CPU class (set them before ``torch`` is imported), so a speed claim can be checked for a lab PC
that is not at hand.

Example::

    >>> import torch
    >>> info = probe_hardware("cpu")
    >>> choice = calibrate_precision(torch.nn.Linear(8, 3), torch.rand(4, 8), info)
    >>> choice.variant in ("fp32", "bf16", "int8")
    True
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "HardwareInfo",
    "ISA_CAP_ENVIRONMENT",
    "PRECISIONS",
    "PrecisionChoice",
    "calibrate_precision",
    "make_precision_variant",
    "probe_hardware",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")

# CPU flags (as named in /proc/cpuinfo) that decide inference speed; x86 first, then Arm
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8",
                     "avx_vnni", "asimd", "sve", "bf16")

# oneDNN's instruction-set levels in increasing order (dnnl_cpu_isa_t); a cap at level L allows every level <= L.
# AVX2_VNNI_2 converts bf16 but has no bf16 dot product, so native bf16 starts at AVX512_CORE_BF16.
_ONEDNN_ISA_ORDER = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                     "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX",
                     "AVX10_1_512_AMX_FP16", "AVX512_CORE_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")
_ONEDNN_ALIASES = {"AVX512_CORE_FP16": "AVX10_1_512", "AVX512_CORE_AMX": "AVX10_1_512_AMX",
                   "AVX512_CORE_AMX_FP16": "AVX10_1_512_AMX_FP16"}
_ONEDNN_NO_CAP = ("", "ALL", "DEFAULT")

# Environment that makes an AVX-512/AMX machine compute like an older CPU class, for every library on the inference
# path: oneDNN (convolutions, bf16 matmuls), ATen's vectorised kernels, MKL (fp32 matmuls of nn.Linear), FBGEMM (int8
# dynamic quantisation), NumPy's SIMD dispatch and OpenBLAS (detection, tracking). Capping only oneDNN and ATen
# leaves fp32 nn.Linear on AVX-512 MKL kernels, which makes fp32 look faster than on the real CPU class.
ISA_CAP_ENVIRONMENT: dict[str, dict[str, str]] = {
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR",
        "OPENBLAS_CORETYPE": "Haswell",
    },
    "avx512": {  # AVX-512 without bf16 or AMX (Skylake-SP / Cascade Lake class)
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI",
        "ATEN_CPU_CAPABILITY": "avx512",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        "FBGEMM_ENABLE_INSTRUCTIONS": "AVX512_E1",
        "NPY_DISABLE_CPU_FEATURES": "AVX512_ICL AVX512_SPR",
        "OPENBLAS_CORETYPE": "SkylakeX",
    },
}
_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                  "FBGEMM_ENABLE_INSTRUCTIONS", "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE")


@dataclass(frozen=True)
class HardwareInfo:
    """What :func:`probe_hardware` found.

    Attributes:
        device: ``"cpu"`` or ``"cuda:<index>"``.
        name: CPU model or GPU name.
        arch: machine architecture (``platform.machine()``).
        flags: the CPU flags of :data:`FLAGS_OF_INTEREST` that the CPU reports.
        isa_caps: instruction-set caps set through the environment (variable -> value).
        aten_capability: ATen's vector instruction level in use (``torch.backends.cpu.get_cpu_capability()``).
        native_bf16: whether bf16 runs on bf16 hardware (``False`` where it would be emulated).
        bf16_reason: why ``native_bf16`` is what it is.
        threads: torch intra-op threads.
        cpu_count: CPU cores this process may use.
        load_avg: 1/5/15-minute load averages (``None`` where the OS does not report them).
    """

    device: str
    name: str
    arch: str
    flags: frozenset[str]
    isa_caps: Mapping[str, str]
    aten_capability: str
    native_bf16: bool
    bf16_reason: str
    threads: int
    cpu_count: int
    load_avg: tuple[float, float, float] | None = None

    def summary(self) -> str:
        """One line for logs and benchmark headers."""
        shown = [("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX-512-BF16", "avx512_bf16"), ("AMX-BF16", "amx_bf16")]
        flags = " ".join(f"{label}:{'yes' if f in self.flags else 'no'}" for label, f in shown)
        caps = ", ".join(f"{k}={v}" for k, v in self.isa_caps.items()) or "none"
        load = "n/a" if self.load_avg is None else " ".join(f"{x:.2f}" for x in self.load_avg)
        return (f"{self.device}: {self.name} ({self.arch}); flags {flags}; ISA caps: {caps}; ATen "
                f"{self.aten_capability}; native bf16: {'yes' if self.native_bf16 else 'no'} ({self.bf16_reason}); "
                f"torch threads {self.threads} of {self.cpu_count} cores; load avg {load}")


def _read_cpuinfo(cpuinfo: str | os.PathLike | None) -> tuple[str, frozenset[str]]:
    """CPU model name and all flags of the first processor in ``/proc/cpuinfo`` text (or a path to it)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        text = path.read_text() if path.is_file() else ""
    elif isinstance(cpuinfo, os.PathLike) or (isinstance(cpuinfo, str) and "\n" not in cpuinfo
                                               and Path(cpuinfo).is_file()):
        text = Path(cpuinfo).read_text()
    else:
        text = str(cpuinfo)
    name, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not name:
            name = value.strip()
        elif key in ("flags", "features") and not flags:  # x86 "flags", Arm "Features"
            flags = set(value.split())
    return name or platform.processor() or platform.machine(), frozenset(flags)


def _onednn_cap_allows_bf16(cap: str) -> bool | None:
    """Whether a oneDNN ISA cap still allows native bf16 (``None``: unknown value)."""
    cap = cap.strip().upper()
    if cap in _ONEDNN_NO_CAP:
        return True
    cap = _ONEDNN_ALIASES.get(cap, cap)
    if cap not in _ONEDNN_ISA_ORDER:
        return None
    return _ONEDNN_ISA_ORDER.index(cap) >= _ONEDNN_ISA_ORDER.index("AVX512_CORE_BF16")


def _cpu_bf16(arch: str, flags: frozenset[str], caps: Mapping[str, str], aten_capability: str) -> tuple[bool, str]:
    arch = arch.lower()
    if arch in ("x86_64", "amd64", "i386", "i686"):
        hw = sorted(f for f in ("avx512_bf16", "amx_bf16") if f in flags)
        if not hw:
            return False, "CPU has neither avx512_bf16 nor amx_bf16: bf16 would be emulated"
        onednn = caps.get("ONEDNN_MAX_CPU_ISA", caps.get("DNNL_MAX_CPU_ISA", ""))
        allowed = _onednn_cap_allows_bf16(onednn)
        if allowed is False:
            return False, f"oneDNN capped at {onednn.upper()} (below AVX512_CORE_BF16): bf16 would be emulated"
        if allowed is None:
            return False, f"unknown oneDNN cap {onednn!r}: bf16 assumed emulated"
        if not aten_capability.upper().startswith("AVX512"):
            return False, f"ATen capped at {aten_capability}: bf16 kernels would be emulated"
        return True, f"CPU has {'+'.join(hw)}"
    if arch in ("aarch64", "arm64"):
        if "bf16" in flags:
            return True, "Arm CPU with the bf16 extension"
        return False, "Arm CPU without the bf16 extension (or flags unknown): bf16 would be emulated"
    return False, f"bf16 support unknown on {arch}: assumed emulated"


def probe_hardware(device: str | torch.device = "cpu", cpuinfo: str | os.PathLike | None = None,
                   environ: Mapping[str, str] | None = None, aten_capability: str | None = None,
                   cuda_capability: tuple[int, int] | None = None, arch: str | None = None) -> HardwareInfo:
    """Probe the CPU (or the CUDA device) that ``device`` names.

    Args:
        device: ``"cpu"`` or a CUDA device.
        cpuinfo: ``/proc/cpuinfo`` text or path (default: the machine's; tests pass a mocked one).
        environ: environment holding the ISA caps (default ``os.environ``).
        aten_capability: ATen's vector level (default ``torch.backends.cpu.get_cpu_capability()``).
        cuda_capability: compute capability of the CUDA device (default: asked from torch).
        arch: machine architecture (default ``platform.machine()``).

    Returns:
        The :class:`HardwareInfo`; ``native_bf16`` is ``False`` on any CPU whose bf16 would be emulated, including a
        CPU with bf16 instructions whose use is capped through ``ONEDNN_MAX_CPU_ISA`` or ``ATEN_CPU_CAPABILITY``.

    Raises:
        ValueError: for a device that is neither CPU nor CUDA.
    """
    device = torch.device(device)
    env = os.environ if environ is None else environ
    caps = {k: env[k] for k in _CAP_VARIABLES if env.get(k)}
    if aten_capability is None:
        aten_capability = torch.backends.cpu.get_cpu_capability()
    arch = arch or platform.machine()
    name, all_flags = _read_cpuinfo(cpuinfo)
    flags = frozenset(f for f in FLAGS_OF_INTEREST if f in all_flags)
    try:
        cpu_count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpu_count = os.cpu_count() or 1
    try:
        load = os.getloadavg()
    except (AttributeError, OSError):
        load = None
    if device.type == "cpu":
        native, reason = _cpu_bf16(arch, all_flags, caps, aten_capability)
        dev = "cpu"
    elif device.type == "cuda":
        index = device.index if device.index is not None else 0
        dev = f"cuda:{index}"
        if cuda_capability is None:
            cuda_capability = torch.cuda.get_device_capability(index)
            name = torch.cuda.get_device_name(index)
        native = tuple(cuda_capability) >= (8, 0)
        reason = (f"compute capability {cuda_capability[0]}.{cuda_capability[1]}"
                  f"{' >= 8.0' if native else ' < 8.0: bf16 would be emulated'}")
    else:
        raise ValueError(f"device must be 'cpu' or a CUDA device, got {str(device)!r}.")
    return HardwareInfo(device=dev, name=name, arch=arch, flags=flags, isa_caps=caps, aten_capability=aten_capability,
                        native_bf16=native, bf16_reason=reason, threads=torch.get_num_threads(), cpu_count=cpu_count,
                        load_avg=None if load is None else tuple(float(x) for x in load))


@dataclass
class PrecisionChoice:
    """Result of :func:`calibrate_precision`.

    Attributes:
        variant: the chosen precision, one of :data:`PRECISIONS`.
        network: the network to run (the int8-quantised copy for ``"int8"``, else the input network).
        autocast_dtype: ``torch.bfloat16`` for ``"bf16"`` (run the network under autocast), else ``None``.
        ms_per_clip: measured milliseconds per sample of every variant that ran.
        max_abs_diff: largest absolute difference of each variant's (post-processed) outputs from fp32's.
        skipped: variants not timed or rejected, with the reason.
        hardware: the probe the choice was made for.
    """

    variant: str
    network: torch.nn.Module
    autocast_dtype: torch.dtype | None
    ms_per_clip: dict[str, float] = field(default_factory=dict)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    hardware: HardwareInfo | None = None

    def summary(self) -> str:
        """One line: the choice, the cost of each variant and why the others were left out."""
        timed = ", ".join(f"{v} {ms:.2f} ms/clip" + (f" (max |diff| {self.max_abs_diff[v]:.3g})"
                                                     if v in self.max_abs_diff and v != "fp32" else "")
                          for v, ms in self.ms_per_clip.items())
        skipped = "; ".join(f"{v}: {why}" for v, why in self.skipped.items())
        return f"precision {self.variant}: {timed}" + (f"; skipped {skipped}" if skipped else "")


def make_precision_variant(network: torch.nn.Module, variant: str) -> tuple[torch.nn.Module, torch.dtype | None]:
    """``(network, autocast dtype)`` that runs ``network`` in ``variant`` (``"int8"`` quantises a copy).

    Raises:
        ValueError: for an unknown variant.
    """
    if variant == "fp32":
        return network, None
    if variant == "bf16":
        return network, torch.bfloat16
    if variant == "int8":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch.ao's deprecation notices; the API still works in torch 2.x
            warnings.filterwarnings("ignore", message=r".*quantiz.*deprecated.*")
            return quantize_dynamic(copy.deepcopy(network).eval(), {torch.nn.Linear}, dtype=torch.qint8), None
    raise ValueError(f"precision must be one of {PRECISIONS}, got {variant!r}.")


def _time_call(run: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls after one warm-up call (the minimum resists other load)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return best


@torch.no_grad()
def calibrate_precision(network: torch.nn.Module, example: torch.Tensor, hardware: HardwareInfo | None = None,
                        candidates: Sequence[str] = PRECISIONS, tolerance: float = 0.05, min_speedup: float = 1.05,
                        repeats: int = 3, output_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        measure: Callable[[str, Callable[[], object]], float] | None = None) -> PrecisionChoice:
    """Time ``network`` on ``example`` in each candidate precision and return the fastest acceptable one.

    fp32 is the reference and always runs. bf16 autocast is a candidate only where ``hardware.native_bf16``;
    int8 dynamic quantisation only on CPU and only for a network with ``nn.Linear`` layers. A variant whose outputs
    (after ``output_transform``, e.g. a softmax) differ from fp32's by more than ``tolerance`` anywhere is rejected;
    the others are ranked by measured time, and a variant other than fp32 is taken only when it is at least
    ``min_speedup`` times faster than fp32 (fp32 is the reference, so ties keep it).

    Args:
        network: the model in ``eval`` mode (not modified; int8 quantises a copy).
        example: a dummy input batch of the size the model will see (its first dimension is the clips per batch).
        hardware: the probe of the device (default :func:`probe_hardware` of ``example.device``).
        candidates: precisions to consider (a subset of :data:`PRECISIONS`).
        tolerance: largest accepted absolute difference of the transformed outputs from fp32.
        min_speedup: speed-up over fp32 below which fp32 is kept.
        repeats: timed calls per variant (the fastest counts), after one warm-up call.
        output_transform: applied to the outputs before comparing (default: none).
        measure: ``measure(variant, run) -> seconds per call``; default times ``run`` with ``time.perf_counter``
            (tests pass a fake to decide which variant is fastest).

    Returns:
        The :class:`PrecisionChoice`; the choice and the costs are also logged (``logging`` INFO).

    Raises:
        ValueError: for an unknown candidate, a non-positive ``tolerance``/``repeats`` or a ``min_speedup`` below 1.
    """
    unknown = [c for c in candidates if c not in PRECISIONS]
    if unknown:
        raise ValueError(f"candidates must be among {PRECISIONS}, got {list(candidates)}.")
    if not tolerance > 0 or repeats < 1 or min_speedup < 1:
        raise ValueError(f"need tolerance > 0, repeats >= 1 and min_speedup >= 1, got {tolerance}, {repeats}, "
                         f"{min_speedup}.")
    hardware = hardware or probe_hardware(example.device)
    transform = output_transform or (lambda y: y)
    if measure is None:
        def measure(_variant: str, run: Callable[[], object]) -> float:
            if example.device.type == "cuda":  # CUDA calls are asynchronous: time until the result exists
                return _time_call(lambda: (run(), torch.cuda.synchronize(example.device)), repeats)
            return _time_call(run, repeats)
    batch = max(int(example.shape[0]), 1)
    network = network.eval()
    choice = PrecisionChoice("fp32", network, None, hardware=hardware)
    on_cpu = hardware.device == "cpu"
    has_linear = any(isinstance(m, torch.nn.Linear) for m in network.modules())
    reference = None
    for variant in ["fp32", *[c for c in candidates if c != "fp32"]]:
        if variant == "bf16" and not hardware.native_bf16:
            choice.skipped[variant] = f"no native bf16 ({hardware.bf16_reason})"
            continue
        if variant == "int8" and not on_cpu:
            choice.skipped[variant] = "dynamic int8 quantisation runs on CPU only"
            continue
        if variant == "int8" and not has_linear:
            choice.skipped[variant] = "no nn.Linear layer to quantise"
            continue
        if variant == "int8" and hasattr(network, "_orig_mod"):
            choice.skipped[variant] = "torch.compile'd network (quantise before compiling)"
            continue
        net, dtype = make_precision_variant(network, variant)

        def run(net=net, dtype=dtype):
            with torch.autocast(example.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                return net(example)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*quantiz.*deprecated.*")
            out = transform(run()).float()
        if reference is None:
            reference = out
        diff = float((out - reference).abs().max())
        choice.max_abs_diff[variant] = diff
        if diff > tolerance:
            choice.skipped[variant] = f"outputs differ from fp32 by {diff:.3g} > tolerance {tolerance}"
            continue
        choice.ms_per_clip[variant] = 1000.0 * measure(variant, run) / batch
        if variant != "fp32" and choice.ms_per_clip["fp32"] / choice.ms_per_clip[variant] >= min_speedup and \
                choice.ms_per_clip[variant] < choice.ms_per_clip[choice.variant]:
            choice.variant, choice.network, choice.autocast_dtype = variant, net, dtype
    logger.info("%s on %s", choice.summary(), hardware.summary())
    return choice
