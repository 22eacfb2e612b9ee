"""The superpixel networks in bfloat16 and float16 against float32: quality, agreement and speed.

``SuperpixelPredictor(..., backend="torch", precision="fp32" | "bf16" | "fp16")`` (``uhrseg superpixels
--precision``) runs PCNet's trunk and head under ``torch.autocast``. This script says whether the superpixels
keep their quality and how much faster the network is, on the machine it runs on:

1. **quality**: BR, BP and ASA of the final superpixels (the predictor's defaults) at each precision, with the
   paired difference to fp32 and its standard error, on the first ``--bsds-images`` BSDS500 *val* images
   (n = 600, the benchmark's default tolerance), the first ``--drone-images`` semantic-drone test frames and the
   DeepGlobe test tiles (n = 600, r = 1); and the share of raw network cell ids (before connectivity) that differ
   from fp32 and of final pixels that end in another superpixel (``bench_backends.partition_differ``);
2. **speed**: the network stage on the 5K photograph at n = 5000 (median of ``--repeats``), and, on the CPU,
   whole ``uhrseg superpixels`` commands: the 5K photograph alone and all ten photographs in one command, with
   ``--precision bf16`` (torch) against the default (fp32 on OpenCV's DNN module on the CPU).

``--device cuda`` runs the same on a GPU (the command rows are skipped there). Usage::

    python benchmarks/bench_precision.py [--device cpu] [--methods pcnet] [--datasets bsds500,drone,deepglobe] \
        [--bsds-images 50] [--drone-images 20] [--out benchmarks/results-precision.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_backends import partition_differ
from uhrseg import SuperpixelPredictor
from uhrseg.datasets.readers import open_dataset
from uhrseg.defaults import INFERENCE_PRECISIONS
from uhrseg.inference.network import check_inference_precision
from uhrseg.io import read_image
from uhrseg.metrics.superpixel import achievable_segmentation_accuracy, boundary_recall_precision

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"
PHOTOS = SHARED / "photos"


def precisions_on(device: str) -> list[str]:
    """The precisions the device runs (no bf16 on a GPU before compute capability 8.0)."""
    found = []
    for precision in INFERENCE_PRECISIONS:
        try:
            found.append(check_inference_precision(precision, torch.device(device)))
        except ValueError:
            pass
    return found


def quality(method: str, device: str, name: str, spec: str, limit: int, tolerance: int | None) -> list[dict]:
    """One row per precision: mean BR / BP / ASA / K over every (image, ground truth) pair of the dataset's first
    ``limit`` images, paired differences to fp32 with standard errors, and differing raw / final pixels."""
    dataset = open_dataset(spec, SHARED / "BSDS500")
    names = dataset.names[:limit]
    precisions = precisions_on(device)
    predictors = {p: SuperpixelPredictor(method, device=device, backend="torch", precision=p) for p in precisions}
    scores = {p: [] for p in precisions}
    raw_differ = {p: 0 for p in precisions}
    final_differ = {p: 0 for p in precisions}
    pixels = 0
    for image_name in names:
        image = dataset.image(image_name)
        truths = dataset.ground_truths(image_name)
        pixels += image.shape[0] * image.shape[1]
        reference_raw = reference = None
        for precision, predictor in predictors.items():
            raw = predictor.run(image, 600, connectivity=False).labels
            labels = predictor.run(image, 600).labels
            if precision == "fp32":
                reference_raw, reference = raw, labels
            raw_differ[precision] += int((raw != reference_raw).sum())
            final_differ[precision] += partition_differ(labels, reference)
            for truth in truths:
                br, bp = boundary_recall_precision(labels, truth, tolerance)
                scores[precision].append((br, bp, achievable_segmentation_accuracy(labels, truth), labels.max() + 1))
    rows = []
    base = np.array(scores["fp32"], np.float64)
    for precision in precisions:
        values = np.array(scores[precision], np.float64)
        diff = values - base
        stderr = diff.std(axis=0, ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.zeros(4)
        rows.append({"method": method, "dataset": name, "images": len(names), "pairs": len(values),
                     "precision": precision, "tolerance": tolerance,
                     "BR": round(float(values[:, 0].mean()), 4), "BP": round(float(values[:, 1].mean()), 4),
                     "ASA": round(float(values[:, 2].mean()), 4), "K": round(float(values[:, 3].mean()), 1),
                     "dBR": round(float(diff[:, 0].mean()), 4), "dBR_se": round(float(stderr[0]), 4),
                     "dBP": round(float(diff[:, 1].mean()), 4), "dBP_se": round(float(stderr[1]), 4),
                     "dASA": round(float(diff[:, 2].mean()), 4), "dASA_se": round(float(stderr[2]), 4),
                     "raw_differ_share": raw_differ[precision] / pixels,
                     "final_differ_share": final_differ[precision] / pixels})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def network_speed(method: str, device: str, repeats: int) -> list[dict]:
    """Network stage on the 5K photograph at n = 5000, per precision (median of ``repeats`` after a warm-up)."""
    image = read_image(PHOTOS / "volna-5120x2880.jpg")
    rows = []
    for precision in precisions_on(device):
        predictor = SuperpixelPredictor(method, device=device, backend="torch", precision=precision)
        predictor.run(image[:512, :512], 300)  # warm-up: kernel selection, numba
        seconds = [predictor.run(image, 5000).timings["network"] for _ in range(repeats)]
        rows.append({"method": method, "precision": precision, "network_s": round(statistics.median(seconds), 3),
                     "runs_s": [round(s, 3) for s in seconds]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def command_speed(repeats: int) -> list[dict]:
    """Whole ``uhrseg superpixels`` processes: the 5K photograph, and the ten photographs in one command, with
    the defaults (OpenCV's DNN module in float32 on the CPU) and with ``--precision bf16`` (torch)."""
    uhrseg = str(Path(sys.executable).with_name("uhrseg"))
    inputs = {"5K photograph": [str(PHOTOS / "volna-5120x2880.jpg")],
              "ten photographs": [str(p) for p in sorted(PHOTOS.glob("*.jpg"))]}
    rows = []
    for label, images in inputs.items():
        for flags in ([], ["--precision", "bf16"]):
            seconds = []
            for _ in range(repeats):
                with tempfile.TemporaryDirectory() as out:
                    start = time.perf_counter()
                    subprocess.run([uhrseg, "superpixels", *images, "-n", "5000", "-q", "--out", out, *flags],
                                   check=True, capture_output=True)
                    seconds.append(time.perf_counter() - start)
            rows.append({"images": label, "flags": " ".join(flags) or "(defaults)",
                         "seconds": round(statistics.median(seconds), 2), "runs_s": [round(s, 2) for s in seconds]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--methods", default="pcnet", help="comma-separated, among pcnet and scn")
    parser.add_argument("--bsds-images", type=int, default=50)
    parser.add_argument("--drone-images", type=int, default=20)
    parser.add_argument("--datasets", default="bsds500,drone,deepglobe",
                        help="comma-separated, among bsds500 (val), drone (semantic-drone test), deepglobe (test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results-precision.json")
    args = parser.parse_args()
    started = time.time()
    results = {"quality": [], "network": [], "commands": []}
    datasets = {"bsds500": ("bsds500 val", "bsds500:val", args.bsds_images, None),
                "drone": ("semantic-drone test", str(SHARED / "semantic-drone" / "test"), args.drone_images, 1),
                "deepglobe": ("deepglobe test", str(SHARED / "deepglobe" / "test"), 10**6, 1)}
    chosen = args.datasets.split(",")
    if not set(chosen) <= set(datasets):
        parser.error(f"--datasets: choose among {', '.join(datasets)}")
    for method in args.methods.split(","):
        for key in chosen:
            results["quality"] += quality(method, args.device, *datasets[key])
        results["network"] += network_speed(method, args.device, args.repeats)
    if args.device == "cpu":
        results["commands"] = command_speed(args.repeats)
    cpu_flags = sorted({f for f in Path("/proc/cpuinfo").read_text().split()
                        if f in ("avx512_bf16", "amx_bf16", "avx512_fp16")}) if Path("/proc/cpuinfo").exists() else []
    meta = {"python": platform.python_version(), "torch": torch.__version__, "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "cpu_flags": cpu_flags,
            "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.time() - started, 1)}
    args.out.write_text(json.dumps({"meta": meta, **results}, indent=1) + "\n")
    print(f"wrote {args.out} ({meta['wall_s']} s)")


if __name__ == "__main__":
    main()
