"""Wall and CPU time of each bundle's default command on this machine, written as a results file.

Runs, one after the other, in fresh output folders (data generation included), exactly the commands the READMEs
give:

- aneurysm: the README's main job, ``train.json`` + ``study.json``;
- embryo_pu, ips_histogram, sperm_emd: ``python -m monai.bundle run --config_file bundles/<study>/configs/train.json``.

Writes ``<output>/default_runs.csv`` (bundle, wall s, user+sys CPU s, exit code, load average before and after) and
``<output>/default_runs.json`` (the same with the machine description), which ``docs/results.md`` renders with
``python -m monai_ext.reports``. Run it on a quiet machine: ``python benchmarks/time_default_runs.py --output
docs/results/timings [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import describe_machine

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "aneurysm": ["bundles/aneurysm/configs/train.json", "bundles/aneurysm/configs/study.json"],
    "embryo_pu": ["bundles/embryo_pu/configs/train.json"],
    "ips_histogram": ["bundles/ips_histogram/configs/train.json"],
    "sperm_emd": ["bundles/sperm_emd/configs/train.json"],
}


def _commit(repo: Path) -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default="docs/results/timings")
    ap.add_argument("--bundles", nargs="+", default=list(COMMANDS), choices=list(COMMANDS))
    ap.add_argument("--repo", default=str(REPO), metavar="PATH",
                    help="run the commands in another checkout of monai_ext (its package first on PYTHONPATH), e.g. "
                         "an older commit for a before/after comparison on the same machine; a config file that "
                         "checkout lacks is left out of the command (before the engine rewrite aneurysm's "
                         "train.json alone ran the whole study)")
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="write each run's outputs to DIR/<bundle> and keep them (default: a temporary folder), "
                         "e.g. to collect the default run's results with python -m monai_ext.reports collect")
    args = ap.parse_args()
    print(describe_machine())
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        repo = Path(args.repo).resolve()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
        for name in args.bundles:
            files = [f for f in COMMANDS[name] if (repo / f).is_file()]
            config = files[0] if len(files) == 1 else json.dumps(files)
            out = Path(tmp) / name
            if out.exists() and any(out.iterdir()):
                raise SystemExit(f"--keep: '{out}' is not empty (a default run starts from nothing).")
            cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--output_dir", str(out),
                   "--ckpt_dir", str(out / "models")]
            load_before = os.getloadavg()[0]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            row = {"bundle": name, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "exit_code": proc.returncode,
                   "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
                   "command": "python -m monai.bundle run --config_file " + config,
                   "repo_commit": _commit(repo)}
            rows.append(row)
            print(f"{name}: {wall:.1f} s wall, {cpu:.1f} s CPU, exit {proc.returncode}, load {row['load_before']} -> "
                  f"{row['load_after']}")
            if proc.returncode:
                print(proc.stderr[-3000:])
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "default_runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "default_runs.json").write_text(json.dumps({"machine": describe_machine(), "runs": rows}, indent=2) + "\n")
    return 1 if any(r["exit_code"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
