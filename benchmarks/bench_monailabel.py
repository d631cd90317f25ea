"""MONAI Label request times of the ``ips_histogram`` model: first and warm ``/infer``, and ``/info`` during inference.

Starts the real server (``python -m monailabel.main start_server``, as ``tests/integration/test_monailabel_server.py``
does) on 127.0.0.1 with the repository's ``ips_histogram`` bundle (seeded initial weights: the timings do not depend on
what the weights are) and a studies folder holding a ``WxH`` grey PNG (default 660x550, the image a lab reported)
and a large one for the ``/info`` check, then measures:

- ``first /infer``: the first request after start-up (loads the network, the readers and the writer), wall time
  seen by the client, and the server's own stage latencies (``pre``, ``infer``, ``post``, ``write``);
- ``warm /infer``: the median of ``--warm`` further requests of the same image;
- ``/info during /infer``: the largest and the median latency of ``/info`` polled every 0.2 s while an inference of
  the large image runs (3D Slicer polls ``/info``; before the fix it waited for the whole inference);
- with ``--profile N``: a cProfile of the first call of the app's infer task (the server's code path without HTTP) in
  a fresh process, its stage latencies and the ``N`` functions with the largest cumulative time.

With ``--baseline-ref REF`` (e.g. ``--baseline-ref main``), a second server runs the app of that git revision (its
``monai_ext`` package exported with ``git archive`` and put first on ``PYTHONPATH``; the bundle is this checkout's)
beside this checkout's; the requests alternate between the two servers, and the ratios baseline / current are
printed.

Needs the ``label`` extra (its own environment, see ``docs/monailabel.md``)::

    . .venv-label/bin/activate
    python benchmarks/bench_monailabel.py --baseline-ref main      # ~3-5 min on 2 cores
    python benchmarks/bench_monailabel.py --baseline-ref main --profile 12   # plus where the first request goes

Every request has a timeout; the servers are stopped whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "ips_histogram"
TIMEOUT = 300  # seconds, one request
START_TIMEOUT = 300  # seconds, server start-up


def machine_info() -> list[str]:
    """The shared benchmark header (:func:`_machine.describe_machine`: CPU, SIMD/AMX flags, threads, load) and this
    process's torch/OMP settings (the server uses its own default thread count)."""
    import torch
    from _machine import describe_machine

    return [*describe_machine().splitlines(),
            f"torch {torch.__version__} ({torch.get_num_threads()} threads in this process; the server uses its own "
            f"default), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_studies(studies: Path, size: tuple[int, int], big: tuple[int, int], work: Path) -> None:
    """``img.png`` of ``size`` (W, H) and ``big.png`` of ``big``, cut from the bundle's synthetic generator."""
    from PIL import Image

    from monai_ext.data.synthetic.ips import generate_ips_dataset

    for name, (w, h) in (("img", size), ("big", big)):
        side = max(w, h, 64)
        dataset = json.loads(generate_ips_dataset(work / name, seed=0, num_cases=3, image_size=side).read_text())
        arr = np.asarray(Image.open(work / name / dataset["training"][0]["image"]))[:h, :w]
        Image.fromarray(np.ascontiguousarray(arr)).save(studies / f"{name}.png")


class Server:
    """One MONAI Label server process serving ``ips_histogram`` from ``root`` (stopped by :meth:`stop`)."""

    def __init__(self, root: Path, app_dir: str, pythonpath: str | None = None):
        import requests

        self.requests = requests
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = root / "server.log"
        env = dict(os.environ, MONAI_LABEL_SESSION_PATH=str(root / "sessions"), MPLBACKEND="Agg")
        if pythonpath:
            env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", app_dir]
        cmd += ["--studies", str(root.parent / "studies"), "-i", "127.0.0.1", "-p", self.url.rsplit(":", 1)[1]]
        cmd += ["--conf", "models", "ips_histogram", "--conf", "bundles_dir", str(root.parent / "bundles")]
        cmd += ["--conf", "model_dir", str(root / "label_models")]
        self._log_file = open(self.log, "w")
        # cwd outside the checkout: ``python -m`` puts the working folder first on sys.path, where this checkout's
        # monai_ext would shadow the baseline's on PYTHONPATH
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, cwd=root,
                                     start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"server exited with {self.proc.returncode}; log {self.log} ends:\n{tail}")
            try:
                if requests.get(f"{self.url}/info/", timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"server did not answer /info in {START_TIMEOUT} s; log: {self.log}")

    def infer(self, image_id: str) -> tuple[float, dict]:
        """Wall time of one ``/infer/ips_histogram`` (multipart answer, as 3D Slicer asks) and the server latencies."""
        from requests_toolbelt.multipart.decoder import MultipartDecoder

        t0 = time.perf_counter()
        r = self.requests.post(f"{self.url}/infer/ips_histogram?image={image_id}", timeout=TIMEOUT)
        wall = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"/infer answered {r.status_code}: {r.text[:500]}")
        for part in MultipartDecoder.from_response(r).parts:
            if b'name="params"' in part.headers[b"Content-Disposition"]:
                return wall, json.loads(part.content)["latencies"]
        raise RuntimeError("no params part in the /infer answer")

    def info_during_infer(self, image_id: str, period: float = 0.2) -> tuple[list[float], float]:
        """Latencies of ``/info`` polled every ``period`` s while one inference of ``image_id`` runs; its wall time."""
        done, out = threading.Event(), {}

        def run() -> None:
            try:
                out["wall"] = self.infer(image_id)[0]
            except Exception as e:  # reported by the caller
                out["error"] = e
            finally:
                done.set()

        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(period)
        lat = []
        while not done.is_set():  # every poll sent while the inference runs counts, however long it waits
            t0 = time.perf_counter()
            r = self.requests.get(f"{self.url}/info/", timeout=TIMEOUT)
            lat.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"/info answered {r.status_code}: {r.text[:500]}")
            time.sleep(period)
        worker.join()
        if "error" in out:
            raise out["error"]
        return lat, out["wall"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log_file.close()


def measure(variants: dict[str, tuple[Path, str, str | None]], warm: int) -> dict[str, dict]:
    """Start one server per variant (``name -> (root, app dir, PYTHONPATH)``), then time them in turn.

    The servers run side by side (each idle while another is timed) and every round of requests visits each of them
    once, so that a change of the shared machine's load hits every variant alike.
    """
    servers, res = {}, {}
    try:
        for name, (root, app_dir, pythonpath) in variants.items():
            root.mkdir(parents=True)
            t0 = time.perf_counter()
            servers[name] = Server(root, app_dir, pythonpath)
            res[name] = {"start": time.perf_counter() - t0, "walls": [], "lats": []}
        for name, server in servers.items():
            res[name]["first"], res[name]["first_lat"] = server.infer("img")
        for _ in range(warm):
            for name, server in servers.items():
                w, lat = server.infer("img")
                res[name]["walls"].append(w)
                res[name]["lats"].append(lat)
        for name, server in servers.items():
            server.infer("big")  # warm the big image's path, so the check below times a steady inference
            res[name]["info_lat"], res[name]["big_wall"] = server.info_during_infer("big")
    finally:
        for server in servers.values():
            server.stop()
    for name, r in res.items():
        r["warm"] = statistics.median(r["walls"])
        r["warm_lat"] = {k: statistics.median(x[k] for x in r["lats"]) for k in ("pre", "infer", "post", "write")}
        print(f"\n== {name} (server log {servers[name].log}) ==")
        print(f"server start to first /info     {r['start']:7.2f} s")
        print(f"first /infer                    {r['first']:7.2f} s   server: " + _stages(r["first_lat"]))
        print(f"warm /infer (median of {warm})      {r['warm']:7.2f} s   server: " + _stages(r["warm_lat"]) +
              "   (all: " + ", ".join(f"{w:.2f}" for w in r["walls"]) + ")")
        info = r["info_lat"]
        print(f"/info during /infer of big.png  max {max(info):6.2f} s, median {statistics.median(info):6.3f} s over "
              f"{len(info)} polls (that /infer: {r['big_wall']:.2f} s)")
    return res


def profile_task(work: Path, image: Path, top: int) -> None:
    """cProfile of the first call of the app's ``ips_histogram`` infer task in this (fresh) process.

    The task is the one the server runs (``MonaiExtInferTask`` over a served copy of the bundle, seeded weights), called
    as MONAI Label's ``app.infer`` calls it; the first call pays every first-use cost of the process (network load,
    readers, the result writer). Prints the stage latencies and the ``top`` functions by cumulative time.
    """
    import cProfile
    import pstats

    from monai_ext.label.bundles import ensure_initial_weights, prepare_bundle
    from monai_ext.label.main import MonaiExtInferTask

    served = prepare_bundle(BUNDLE, work / "served")
    ensure_initial_weights(served)
    task = MonaiExtInferTask(str(served), {})
    profiler = cProfile.Profile()
    profiler.enable()
    _, result = task({"model": "ips_histogram", "image": str(image), "device": "cpu"})
    profiler.disable()
    print("stages (s): " + _stages(result["latencies"]) + f", total {result['latencies']['total']:.2f}")
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive calls, tottime, cumtime, callers)
    rows = sorted(((v[3], k) for k, v in stats.items()), reverse=True)
    print(f"top {top} by cumulative time (s):")
    for cum, (file, line, name) in rows[:top]:
        print(f"  {cum:6.2f}  {name}  ({'/'.join(Path(file).parts[-3:])}:{line})")


def profile_first_requests(variants: dict[str, tuple[Path, str, str | None]], image: Path, top: int) -> None:
    """:func:`profile_task` of each variant in a fresh Python process (its own ``PYTHONPATH``)."""
    for name, (root, _, pythonpath) in variants.items():
        env = dict(os.environ, MPLBACKEND="Agg")
        if pythonpath:
            env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
        work = root / "profile"
        work.mkdir(parents=True)
        cmd = [sys.executable, __file__, "--profile-task", str(work), str(image), str(top)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"profiling {name} failed:\n{out.stderr[-3000:]}")
        print(f"\n== cProfile of the first infer task call, {name} ==\n{out.stdout.rstrip()}")


def _stages(lat: dict) -> str:
    return ", ".join(f"{k} {lat[k]:.2f}" for k in ("pre", "infer", "post", "write"))


def export_revision(ref: str, dest: Path) -> Path:
    """``monai_ext/`` of git revision ``ref`` under ``dest`` (for ``PYTHONPATH``)."""
    dest.mkdir(parents=True)
    archive = dest / "src.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", ref, "monai_ext"], stdout=f, check=True)
    with tarfile.open(archive) as t:
        t.extractall(dest, filter="data")
    return dest


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=_size, default=(660, 550), help="W x H of the timed image (default 660x550)")
    parser.add_argument("--big", type=_size, default=(2000, 2000), help="W x H of the image inferred during the "
                        "/info polls (default 2000x2000)")
    parser.add_argument("--warm", type=int, default=5, help="warm requests (default 5)")
    parser.add_argument("--baseline-ref", default=None, help="git revision whose app is measured beside this "
                        "checkout's (e.g. main)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also cProfile the first infer task call "
                        "of each variant in a fresh process and print its N most expensive functions")
    parser.add_argument("--profile-task", nargs=3, help=argparse.SUPPRESS)  # internal: work dir, image, top
    args = parser.parse_args()
    if args.profile_task:
        work, image, top = args.profile_task
        profile_task(Path(work), Path(image), int(top))
        return

    from monai_ext.label import APP_DIR

    print("\n".join(machine_info()))
    print(f"image {args.size[0]}x{args.size[1]} (W x H), big image {args.big[0]}x{args.big[1]}, bundle {BUNDLE}")
    with tempfile.TemporaryDirectory(prefix="bench_monailabel_") as tmp:
        tmp = Path(tmp)
        (tmp / "studies").mkdir()
        (tmp / "bundles").mkdir()
        (tmp / "bundles" / "ips_histogram").symlink_to(BUNDLE, target_is_directory=True)
        write_studies(tmp / "studies", args.size, args.big, tmp / "gen")
        variants = {}
        if args.baseline_ref:
            src = export_revision(args.baseline_ref, tmp / "baseline_src")
            commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.baseline_ref],
                                    capture_output=True, text=True, check=True).stdout.strip()
            print(f"baseline: the app of {args.baseline_ref} at {commit}; current: this checkout")
            variants["baseline"] = (tmp / "baseline", str(src / "monai_ext" / "label"), str(src))
        variants["current"] = (tmp / "current", APP_DIR, None)
        results = measure(variants, args.warm)
        if args.profile:
            profile_first_requests(variants, tmp / "studies" / "img.png", args.profile)
    if "baseline" in results:
        b, c = results["baseline"], results["current"]
        print(f"\n== ratios baseline ({args.baseline_ref}) / current (> 1: current is faster) ==")
        print(f"first /infer              {b['first'] / c['first']:6.2f}x   ({b['first']:.2f} s -> {c['first']:.2f} s)")
        print(f"warm /infer               {b['warm'] / c['warm']:6.2f}x   ({b['warm']:.2f} s -> {c['warm']:.2f} s)")
        bi, ci = max(b["info_lat"]), max(c["info_lat"])
        print(f"max /info during /infer   {bi / ci:6.1f}x   ({bi:.2f} s -> {ci:.2f} s)")
    from _machine import load_line

    print("at end: " + load_line())


if __name__ == "__main__":
    main()
