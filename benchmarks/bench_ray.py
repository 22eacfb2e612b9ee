"""Throughput of ``uhrseg superpixels`` over 40 real images: single machine, and ``--ray`` with 1 and 2 workers.

The images are the first 36 frames of ``semantic-drone/test`` (1500 x 1000) and 4 photographs of 2560 x 1600,
``-n 600`` with PCNet (the test's workload, ``tests/test_distributed.py``). Each run is the whole command in a
fresh process with a fresh output folder; ``--ray`` starts a local Ray instance on this machine (its start-up is
in the time). Throughput is images per second of wall clock.

Usage::

    python benchmarks/bench_ray.py [--out benchmarks/results-ray.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"
IMAGES = sorted((SHARED / "semantic-drone" / "test" / "images").glob("*.jpg"))[:36] + sorted(
    (SHARED / "photos").glob("*-2560x1600.jpg"))[:4]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "results-ray.json")
    args = parser.parse_args()
    uhrseg = str(Path(sys.executable).with_name("uhrseg"))
    base = [uhrseg, "superpixels", *map(str, IMAGES), "-n", "600", "--device", "cpu", "-q"]
    runs = {"single machine (no --ray)": [], "--ray, 1 worker": ["--ray", "--ray-workers", "1"],
            "--ray, 2 workers": ["--ray", "--ray-workers", "2"]}
    results = []
    for name, extra in runs.items():
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            proc = subprocess.run([*base, "--out", out, *extra], capture_output=True, text=True,
                                  env={**os.environ, "RAY_AUTH_MODE": "disabled"})
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
        results.append({"run": name, "images": len(IMAGES), "seconds": wall, "images_per_s": len(IMAGES) / wall})
        print(f"{name}: {wall:.1f} s, {len(IMAGES) / wall:.2f} images/s", flush=True)
    meta = {"python": platform.python_version(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
