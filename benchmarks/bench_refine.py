"""Seconds and peak memory of each class-map refinement on a 5120 x 2880 photograph.

ISDNet (packaged drone weights) segments the photograph once; its probabilities (24 x 360 x 640, float16) are
saved. Then each refinement runs in a fresh process on that image and those probabilities, and reports:

* **seconds**: the in-process time of :func:`uhrseg.semantic.refine_classes` (for ``superpixels`` this
  includes making the superpixels);
* **peak RSS**: the process's peak resident memory, and **added**: its peak minus the memory held after the
  image and the probabilities were loaded (what the refinement itself needs).

Usage::

    python benchmarks/bench_refine.py [--image PATH] [--out benchmarks/results-refine.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHOTO = HERE.parent.parent / "shared" / "datasets" / "photos" / "volna-5120x2880.jpg"
METHODS = ["none", "bilinear", "guided", "superpixels:pcnet", "superpixels:slic", "superpixels:seeds"]


def one(image_path: Path, probs_path: Path, method: str) -> dict:
    import time

    import numpy as np

    from uhrseg.io import read_image
    from uhrseg.memory import peak_rss_bytes, reset_peak_rss
    from uhrseg.semantic import ClassRefinement, refine_classes

    image = read_image(image_path)
    probs = np.load(probs_path)
    name, _, superpixels = method.partition(":")
    refinement = ClassRefinement(name, superpixels=superpixels or "pcnet")
    reset_peak_rss()
    held = peak_rss_bytes()
    t0 = time.perf_counter()
    classes = refine_classes(probs, refinement, image=image)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    return {"method": method, "seconds": seconds, "peak_rss_mb": peak / 2**20, "added_mb": (peak - held) / 2**20,
            "n_segments": refinement.segments_for(*image.shape[:2]) if name == "superpixels" else None,
            "classes": int(len(np.unique(classes)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=PHOTO)
    parser.add_argument("--out", type=Path, default=HERE / "results-refine.json")
    parser.add_argument("--one", nargs=2, metavar=("PROBS", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.image, Path(args.one[0]), args.one[1])))
        return
    import numpy as np

    from uhrseg import SemanticPredictor, read_image

    with tempfile.TemporaryDirectory() as tmp:
        probs_path = Path(tmp) / "probs.npy"
        result = SemanticPredictor("isdnet", weights="drone", device="cpu").run(read_image(args.image))
        np.save(probs_path, result.probabilities)
        rows = []
        for method in METHODS:
            out = subprocess.run([sys.executable, __file__, "--image", str(args.image), "--one", str(probs_path),
                                  method], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{method}: {r['seconds']:.2f} s, peak {r['peak_rss_mb']:.0f} MB (+{r['added_mb']:.0f} MB)",
                  flush=True)
    args.out.write_text(json.dumps({"image": str(args.image), "probabilities": list(result.probabilities.shape),
                                    "results": rows}, indent=1) + "\n")
    print("| refinement | seconds | peak RSS (MB) | added by the refinement (MB) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['added_mb']:.0f} |")


if __name__ == "__main__":
    main()
