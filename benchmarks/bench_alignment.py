"""What the ITK alignment of the brain landmark model costs, and what the N4 grid changes, one run.

``inference.json`` aligns every input brain to the MNI152 template before the landmark search
(:class:`~monai_ext.apps.aneurysm.AlignToModelTemplated`, the template at 1 mm and registered at 2 mm as
``brain.json`` trains it). This script measures that step as a user meets it:

* **loading ITK's modules**, in a new Python process each time (``--processes``): ITK's Python wrapping builds its
  template classes when an attribute is first used; the N4 filter and the registration method are timed
  separately. Every CLI run (``python -m monai.bundle run ... inference.json``) pays this once; a MONAI Label server
  once per process;
* **one alignment** of the same synthetic whole-head T1 brains with skull (random pose, subject-like deformation,
  bias field and noise: :class:`~monai_ext.data.synthetic.brain.SynthesizeBraind` with its defaults) under three
  ``registration`` settings side by side, interleaved brain by brain: the default (N4 bias correction fitted on a
  4 mm grid), N4 on an 8 mm grid (``{"bias_voxel_mm": 8.0}``) and no N4 (``{"bias_correction": False}``). For each:
  the seconds of the alignment call (starts, N4, registrations, resampling; one ITK thread, as the bundle runs it)
  and the error of the trivial baseline it gives (the template's fiducials mapped into the input by the found
  matrix, against the brain's true fiducials, mean mm); the ratio of each setting's time to the default's.

A few brains are no evaluation of accuracy (``brain_evaluate.json`` is); the errors are printed to show the settings
did not derail on these brains.

Run: ``python benchmarks/bench_alignment.py [--brains 2] [--processes 2] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from _machine import describe_machine, load_line  # benchmarks/_machine.py (the script's own folder is on sys.path)

SETTINGS = {"default (N4 on 4 mm)": {}, "N4 on 8 mm": {"bias_voxel_mm": 8.0}, "no N4": {"bias_correction": False}}

_LOAD_ITK = """
import json, time
t0 = time.perf_counter()
import itk
t1 = time.perf_counter()
itk.N4BiasFieldCorrectionImageFilter
t2 = time.perf_counter()
itk.ImageRegistrationMethodv4
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "n4": t2 - t1, "registration": t3 - t2}))
"""


def itk_loading(processes: int) -> list[dict[str, float]]:
    """Seconds to import ITK and to build its N4 and registration classes, each in a new process."""
    out = []
    for _ in range(processes):
        proc = subprocess.run([sys.executable, "-c", _LOAD_ITK], capture_output=True, text=True, check=True)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brains", type=int, default=2, help="synthetic brains aligned under every setting")
    parser.add_argument("--processes", type=int, default=2, help="new processes timing ITK's module loading")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first brain")
    args = parser.parse_args()
    print(describe_machine())
    print(f"command: python benchmarks/bench_alignment.py --brains {args.brains} --processes {args.processes} "
          f"--seed {args.seed}\n")

    loads = itk_loading(args.processes)
    print("ITK module loading in a new process (s):")
    print(f"{'process':>8} {'import itk':>11} {'N4 filter':>10} {'registration':>13} {'total':>7}")
    for i, t in enumerate(loads):
        print(f"{i:>8} {t['import']:>11.2f} {t['n4']:>10.2f} {t['registration']:>13.2f} {sum(t.values()):>7.2f}")

    import itk

    from monai_ext.apps.aneurysm import BrainTemplateSpace
    from monai_ext.data.synthetic.brain import SynthesizeBraind
    from monai_ext.transforms import apply_matrix

    for cls in ("N4BiasFieldCorrectionImageFilter", "ImageRegistrationMethodv4"):  # loaded before anything is timed
        getattr(itk, cls)
    space = BrainTemplateSpace(voxel_size=1, registration_voxel_size=2)  # brain.json's defaults
    _, sets = space.landmarks
    truth = sets["groundtruth"]
    ok = np.isfinite(truth).all(1)
    tpl = space.template
    synth = SynthesizeBraind(template=tpl, landmark_sets=sets, spatial_size=tpl.shape, output_affine=tpl.affine,
                             contrast={"contrasts": ("t1",), "exclude": (), "skull_prob": 1.0})
    aligners = {name: space.aligner("image", **kw) for name, kw in SETTINGS.items()}
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    errors: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for b in range(args.brains):
        sample = synth({"seed": args.seed + b})
        landmarks = np.asarray(sample["landmarks"], dtype=np.float64)
        shape = tuple(sample["image"].shape[1:])
        for name, align in aligners.items():
            t0 = time.perf_counter()
            d = align({"image": sample["image"]})
            seconds[name].append(time.perf_counter() - t0)
            placed = apply_matrix(np.asarray(d["template_to_image"], dtype=np.float64), truth[ok])
            errors[name].append(float(np.linalg.norm(placed - landmarks[ok], axis=1).mean()))
        print(f"brain {b} (seed {args.seed + b}, {shape[0]} x {shape[1]} x {shape[2]} voxels of 1 mm): "
              + ", ".join(f"{n} {seconds[n][-1]:.1f} s / {errors[n][-1]:.2f} mm" for n in SETTINGS))

    base = float(np.mean(seconds[next(iter(SETTINGS))]))
    print(f"\nalignment of {args.brains} whole-head 1 mm T1 brains with skull, one ITK thread:")
    print(f"{'setting':<22} {'mean s':>7} {'min s':>6} {'max s':>6} {'time / default':>15} {'baseline mm':>12}")
    for name in SETTINGS:
        s = np.asarray(seconds[name])
        print(f"{name:<22} {s.mean():>7.1f} {s.min():>6.1f} {s.max():>6.1f} {s.mean() / base:>15.2f} "
              f"{np.mean(errors[name]):>12.2f}")
    print("\n" + load_line())


if __name__ == "__main__":
    main()
