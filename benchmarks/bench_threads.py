#!/usr/bin/env python
"""Prediction time with the default thread settings against fixed thread counts, on an idle
machine and with one core kept busy by another process (issue 16, item 1), in one run.

Each setting runs ``tokenunify predict IN OUT --tta none`` in a fresh process (so environment
variables such as ``OMP_WAIT_POLICY`` take effect at torch's import), ``--repeats`` times,
settings alternating so that drifts in the machine's load hit all of them alike. The busy
neighbour is a second Python process spinning in a loop (one core at 100 %) for the whole
"busy" case. Settings:

- ``default``: what a user gets (no thread variable set);
- ``1``, ``2``, ...: ``--threads N``;
- ``old``: the settings before the thread policy: every core and OpenMP's spinning waits
  (``OMP_WAIT_POLICY=ACTIVE``, ``OMP_NUM_THREADS`` = all cores).

Prints the median seconds per setting and case, and the ratio of the default to the best
fixed count (target: at most 1.5 when busy, and no slower than ``old`` when idle).

  python benchmarks/bench_threads.py [IN.h5] [--repeats 2] [--counts 1 2] [--json out.json]

Default input: the gala test volume of ``../shared/data/medulla-labeled`` (1 M voxels).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = ROOT.parent / "shared" / "data" / "medulla-labeled" / "test-image.h5"
THREAD_VARS = ("OMP_NUM_THREADS", "TOKENUNIFY_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")


def setting_env(name: str, cores: int) -> tuple[dict, list[str]]:
    """Environment and extra CLI arguments of one setting."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if name == "default":
        return env, []
    if name == "old":
        return {**env, "OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": str(cores)}, []
    return env, ["--threads", name]


@contextmanager
def busy_core(active: bool):
    """A neighbour process keeping one core busy while the block runs (if ``active``)."""
    if not active:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


def predict_seconds(image: Path, dataset: str | None, out: Path, env: dict, extra: list[str]) -> float:
    argv = [sys.executable, "-m", "napari_tokenunify.cli", "predict", str(image), str(out),
            "--tta", "none", "--overwrite", "--quiet", *extra]
    if dataset:
        argv += ["--dataset", dataset]
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", nargs="?", type=Path, default=DEFAULT_INPUT)
    p.add_argument("--dataset", default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--counts", nargs="+", default=None, help="fixed thread counts (default 1..cores)")
    p.add_argument("--cases", nargs="+", default=["idle", "busy"], choices=["idle", "busy"])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not args.image.exists():
        print(f"input {args.image} not found; give an image volume", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "src"))
    from napari_tokenunify.threads import available_cores

    cores = available_cores()
    counts = args.counts or [str(n) for n in range(1, cores + 1)]
    settings = ["default", *counts, "old"]
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "affs.zarr"
        for case in args.cases:
            times: dict[str, list[float]] = {s: [] for s in settings}
            with busy_core(case == "busy"):
                for _ in range(args.repeats):
                    for s in settings:
                        env, extra = setting_env(s, cores)
                        times[s].append(predict_seconds(args.image, args.dataset, out, env, extra))
            med = {s: statistics.median(v) for s, v in times.items()}
            best = min(med[c] for c in counts)
            results[case] = {"seconds": times, "median": med,
                             "default_over_best_fixed": med["default"] / best,
                             "default_over_old": med["default"] / med["old"]}
    print(f"tokenunify predict {args.image.name} --tta none; {cores} cores; "
          f"{args.repeats} runs per setting, alternating; median seconds (process start included)")
    print("case  " + "".join(f"{s:>10}" for s in settings) + "  default/best  default/old")
    for case, r in results.items():
        row = "".join(f"{r['median'][s]:10.1f}" for s in settings)
        print(f"{case:5} {row}  {r['default_over_best_fixed']:12.2f}  {r['default_over_old']:11.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cores": cores, "image": str(args.image), **results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
