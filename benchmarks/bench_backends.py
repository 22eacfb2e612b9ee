"""The OpenCV backend against the torch backend: do the labels agree, and how fast is each network?

For every image, PCNet and SCN with the packaged weights run on both backends (``SuperpixelPredictor(...,
backend="torch" | "opencv")``, CPU), and the script counts the pixels whose labels differ, before the
connectivity step (raw network labels at full resolution) and after the whole pipeline, and keeps the
``network`` stage time of each backend (the rest of the pipeline is the same code). After the whole pipeline it
also counts the pixels whose *superpixel* differs: each torch label is matched to the OpenCV label it overlaps
most, and the pixels that the matching does not explain are counted. The two counts differ when one flipped
fragment changes the order in which the connectivity step numbers the superpixels after it (the same
partition, other label values).

Images: the 200 BSDS500 test images at n = 600, and the photographs of ``datasets/photos`` at n = 5000.

Usage::

    python benchmarks/bench_backends.py [--bsds-images 200] [--methods pcnet,scn] \
        [--out benchmarks/results-backends.json]

With ``--methods`` naming a subset (after new weights for one network), the other methods' rows are kept from
the existing ``--out`` file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from uhrseg import SuperpixelPredictor
from uhrseg.io import read_image
from uhrseg.metrics.superpixel import achievable_segmentation_accuracy

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "datasets"


def partition_differ(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels of two (H, W) int32 label maps left unexplained when each label of ``a`` is mapped to the label of
    ``b`` it overlaps most: ``N (1 - ASA(a, b))`` with ``b`` as the ground truth (0 for the same partition under
    any numbering)."""
    return round(a.size * (1.0 - achievable_segmentation_accuracy(a, b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bsds-images", type=int, default=200)
    parser.add_argument("--methods", default="pcnet,scn", help="comma-separated, among pcnet and scn")
    parser.add_argument("--out", type=Path, default=HERE / "results-backends.json")
    args = parser.parse_args()
    methods = [m for m in ("pcnet", "scn") if m in args.methods.split(",")]
    kept = json.loads(args.out.read_text())["images"] if args.out.is_file() else []
    kept = [r for r in kept if r["method"] not in methods]
    bsds = sorted((SHARED / "BSDS500" / "images" / "test").glob("*.jpg"))[: args.bsds_images]
    photos = sorted((SHARED / "photos").glob("*.jpg"))
    jobs = [(p, 600) for p in bsds] + [(p, 5000) for p in photos]
    rows = []
    for method in methods:
        predictors = {b: SuperpixelPredictor(method, device="cpu", backend=b) for b in ("torch", "opencv")}
        for path, n in tqdm(jobs, desc=method, unit="image"):
            image = read_image(path)
            raw = {b: p.run(image, n, connectivity=False) for b, p in predictors.items()}
            final = {b: p.predict(image, n) for b, p in predictors.items()}
            rows.append({
                "method": method, "image": path.name, "n": n, "pixels": int(image.shape[0] * image.shape[1]),
                "raw_differ": int((raw["torch"].labels != raw["opencv"].labels).sum()),
                "final_differ": int((final["torch"] != final["opencv"]).sum()),
                "final_partition_differ": partition_differ(final["torch"], final["opencv"]),
                "network_s": {b: round(r.timings["network"], 4) for b, r in raw.items()},
            })
    rows = sorted(rows + kept, key=lambda r: ("pcnet", "scn").index(r["method"]))
    summary = []
    for method in ("pcnet", "scn"):
        for kind, n in (("BSDS500 test", 600), ("photos", 5000)):
            part = [r for r in rows if r["method"] == method and r["n"] == n]
            if not part:
                continue
            summary.append({
                "method": method, "images": kind, "n": n, "count": len(part),
                "pixels": sum(r["pixels"] for r in part),
                "raw_differ": sum(r["raw_differ"] for r in part),
                "final_differ": sum(r["final_differ"] for r in part),
                "images_with_final_difference": sum(r["final_differ"] > 0 for r in part),
                "final_partition_differ": sum(r["final_partition_differ"] for r in part),
                "network_median_s": {b: statistics.median(r["network_s"][b] for r in part)
                                     for b in ("torch", "opencv")},
            })
            s = summary[-1]
            print(f"{method} {kind} n={n}: {s['count']} images, raw labels differ at {s['raw_differ']} of "
                  f"{s['pixels']} pixels, final at {s['final_differ']} ({s['images_with_final_difference']} images; "
                  f"{s['final_partition_differ']} in another superpixel); "
                  f"network median torch {s['network_median_s']['torch']:.3f} s, opencv "
                  f"{s['network_median_s']['opencv']:.3f} s", flush=True)
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                                    "opencv": cv2.__version__, "summary": summary, "images": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
