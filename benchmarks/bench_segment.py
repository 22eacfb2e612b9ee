"""Whole-command time and peak memory of ``uhrseg segment`` on 5K photographs and a 20000 x 20000 tiled TIFF.

Each run is the user's command, ``uhrseg segment IMAGE --model M --weights W --out DIR``, in a fresh process.
Reported per run (see README.md here):

* **command s**: wall clock of the whole process (Python start-up, imports, model load, decoding, segmentation,
  writing the class map, the overlay and ``summary.json``);
* **pipeline s**: the in-process total from ``summary.json`` (decode to written files), and its stages;
* **peak RSS**: the process's peak resident memory while it handled the image (``summary.json``; the counter is
  reset when the image starts, after the model is loaded).

The 20K image is the mosaic of ``bench_superpixels.py`` (the two 5120 x 2880 photographs, JPEG-tiled TIFF);
``uhrseg segment`` streams it (above 134 million pixels): read band by band, intermediate maps in files,
class map written as a tiled BigTIFF.

A run ``MODEL:WEIGHTS:IMAGE:REFINE`` adds ``--refine REFINE`` (e.g. ``isdnet:drone:20K:superpixels``: PCNet
superpixels at the bridge's default (``n = H W / 1024`` merged from 1.5 n cells since 2026-12-06), streamed too,
and written as a tiled int32 BigTIFF).

Usage::

    python benchmarks/bench_segment.py [--repeats 3] [--runs isdnet:drone:5K-shell,isdnet:drone:20K,...]
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
sys.path.insert(0, str(HERE))
from bench_superpixels import PHOTOS, WORK, prepare_images  # noqa: E402

DEFAULT_RUNS = "isdnet:drone:5K-shell,isdnet:drone:5K-volna,isdnet:drone:20K"


def image_paths() -> dict[str, Path]:
    paths = prepare_images()
    return {"5K-shell": PHOTOS / "shell-5120x2880.jpg", "5K-volna": PHOTOS / "volna-5120x2880.jpg",
            "2.5K": paths["2.5K"], "10K": paths["10K"], "20K": paths["20K"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="MODEL:WEIGHTS:IMAGE[:REFINE], comma-separated")
    parser.add_argument("--out", type=Path, default=HERE / "results-segment.json")
    args = parser.parse_args()
    images = image_paths()
    uhrseg = Path(sys.executable).with_name("uhrseg")
    runs = [r.split(":") for r in args.runs.split(",") if r]
    results = []
    for i, (model, weights, label, *refine) in enumerate(runs, 1):
        samples = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(dir=WORK) as out_dir:
                cmd = [str(uhrseg), "segment", str(images[label]), "--model", model, "--weights", weights,
                       "--device", "cpu", "--out", out_dir, "-q"] + (["--refine", refine[0]] if refine else [])
                t = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - t
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    raise SystemExit(f"run failed: {' '.join(cmd)}")
                entry = json.loads((Path(out_dir) / "summary.json").read_text())["images"][0]
            entry["command_s"] = wall
            samples.append(entry)
        med = lambda key: statistics.median(s["seconds"][key] for s in samples)  # noqa: E731
        row = {"model": model + (f" --refine {refine[0]}" if refine else ""), "weights": weights, "image": label,
               "width": samples[0]["width"],
               "height": samples[0]["height"], "mode": samples[0]["mode"], "streamed": samples[0]["streamed"],
               "command_s": statistics.median(s["command_s"] for s in samples),
               "runs_command_s": [round(s["command_s"], 2) for s in samples],
               "pipeline_s": med("total"), "stages_s": {k: med(k) for k in samples[0]["seconds"]},
               "peak_rss_mb": max(s["peak_rss_bytes"] for s in samples) / 2**20, "repeats": args.repeats}
        results.append(row)
        print(f"[{i}/{len(runs)}] {model} {weights} {label}: command {row['command_s']:.2f} s "
              f"{row['runs_command_s']}, pipeline {row['pipeline_s']:.2f} s, peak {row['peak_rss_mb']:.0f} MB",
              flush=True)
        meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d")}
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print("| model | weights | image | mode | command (s), median | pipeline (s) | stages (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages_s"].items() if k != "total")
        mode = r["mode"] + (", streamed" if r["streamed"] else "")
        print(f"| {r['model']} | {r['weights']} | {r['image']} ({r['width']}x{r['height']}) | {mode} | "
              f"{r['command_s']:.2f} | {r['pipeline_s']:.2f} | {stages} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
