"""Whole-process time of the ``uhrseg superpixels`` command (what a user waits for), start-up included.

Runs, each in a fresh process, nothing else on the CPU:

* ``uhrseg superpixels volna-5120x2880.jpg -n 5000`` (PCNet, packaged weights, every option at its default:
  the OpenCV backend on a CPU-only machine, 1.5 n grid cells merged to n, labels PNG, JPEG overlay and
  preview), the same with ``--oversegmentation 1`` (the grid of n cells), with ``--backend torch``, with
  ``--overlay png``, and with ``--method slic``;
* ``python -c "import torch"`` and a bare interpreter, for the share of start-up that is not ours, and
  ``uhrseg example-image``, which the README demo runs before its ``uhrseg superpixels``, and ``uhrseg
  superpixels|evaluate|train --help`` (what a command pays before its work starts: its parser, no torch);
* the README demo (``uhrseg superpixels "$(uhrseg example-image)" --n-segments 2000``) twice with an empty
  numba cache (``NUMBA_CACHE_DIR``): the first run compiles the kernels, as after a fresh install; the second
  reads them from the cache.

Each row is the median of ``--repeats`` runs (the demo rows: one pair per repeat) with the in-process pipeline
total from ``summary.json`` beside it.

Usage::

    python benchmarks/bench_cli.py [--repeats 3] [--out benchmarks/results-cli.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHOTO = HERE.parent.parent / "shared" / "datasets" / "photos" / "volna-5120x2880.jpg"


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, dict | None]:
    with tempfile.TemporaryDirectory() as out:
        full = cmd + ["--out", out] if cmd[1:2] == ["superpixels"] and "--help" not in cmd else cmd
        t0 = time.perf_counter()
        proc = subprocess.run(full, capture_output=True, text=True, env={**os.environ, **(env or {})})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"failed: {' '.join(full)}\n{proc.stderr}")
        summary = Path(out) / "summary.json"
        entry = json.loads(summary.read_text())["images"][0] if summary.exists() else None
    return wall, entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slic-repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results-cli.json")
    args = parser.parse_args()
    uhrseg = str(Path(sys.executable).with_name("uhrseg"))
    demo = subprocess.run([uhrseg, "example-image"], capture_output=True, text=True, check=True).stdout.strip()
    rows = {
        "python -c pass": ([sys.executable, "-c", "pass"], args.repeats),
        "python -c 'import torch'": ([sys.executable, "-c", "import torch"], args.repeats),
        "uhrseg example-image (the README demo's first step)": ([uhrseg, "example-image"], args.repeats),
        "uhrseg superpixels --help": ([uhrseg, "superpixels", "--help"], args.repeats),
        "uhrseg evaluate --help": ([uhrseg, "evaluate", "--help"], args.repeats),
        "uhrseg train --help": ([uhrseg, "train", "--help"], args.repeats),
        "pcnet 5K n=5000 (jpg overlay)": ([uhrseg, "superpixels", str(PHOTO), "-n", "5000", "-q"], args.repeats),
        "pcnet 5K n=5000 --oversegmentation 1": ([uhrseg, "superpixels", str(PHOTO), "-n", "5000", "-q",
                                                  "--oversegmentation", "1"], args.repeats),
        "pcnet 5K n=5000 --backend torch": ([uhrseg, "superpixels", str(PHOTO), "-n", "5000", "-q",
                                             "--backend", "torch"], args.repeats),
        "pcnet 5K n=5000 --overlay png": ([uhrseg, "superpixels", str(PHOTO), "-n", "5000", "-q",
                                           "--overlay", "png"], args.repeats),
        "slic 5K n=5000": ([uhrseg, "superpixels", str(PHOTO), "-n", "5000", "--method", "slic", "-q"],
                           args.slic_repeats),
    }
    results = []
    for name, (cmd, repeats) in rows.items():
        runs = [timed(cmd) for _ in range(repeats)]
        walls = [w for w, _ in runs]
        pipe = [e["seconds"]["total"] for _, e in runs if e]
        results.append({"name": name, "command_s": statistics.median(walls), "runs_s": [round(w, 2) for w in walls],
                        "pipeline_s": statistics.median(pipe) if pipe else None,
                        "stages_s": runs[len(runs) // 2][1]["seconds"] if pipe else None})
        print(f"{name}: {results[-1]['command_s']:.2f} s {results[-1]['runs_s']}", flush=True)
    firsts, seconds = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            cmd = [uhrseg, "superpixels", demo, "--n-segments", "2000", "-q"]
            firsts.append(timed(cmd, {"NUMBA_CACHE_DIR": cache})[0])
            seconds.append(timed(cmd, {"NUMBA_CACHE_DIR": cache})[0])
    for name, walls in (("README demo, first run (empty numba cache)", firsts), ("README demo, second run", seconds)):
        results.append({"name": name, "command_s": statistics.median(walls), "runs_s": [round(w, 2) for w in walls]})
        print(f"{name}: {results[-1]['command_s']:.2f} s {results[-1]['runs_s']}", flush=True)
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print("| command | whole process (s), median | runs (s) | pipeline inside (s) |")
    print("|---|---|---|---|")
    for r in results:
        pipe = f"{r['pipeline_s']:.2f}" if r.get("pipeline_s") else "-"
        print(f"| {r['name']} | {r['command_s']:.2f} | {', '.join(map(str, r['runs_s']))} | {pipe} |")


if __name__ == "__main__":
    main()
