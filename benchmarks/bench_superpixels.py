"""Time and peak memory of every method on real 1K, 2.5K and 5K images (see README.md beside this file).

Each (method, image, n) run happens in a fresh Python process, so its peak resident memory (VmHWM) is its own:
the process reads the image, loads the method, computes the labels and writes nothing. Reported per run:
seconds to decode the file, seconds for the superpixels (``SuperpixelPredictor.run``: resize, network,
assignment, connectivity), and the process's peak RSS including the Python and torch runtime.

PCNet and SCN run with an untrained checkpoint made here (seeded): the amount of work is that of a trained
network, the superpixels are not.

Usage::

    python benchmarks/bench_superpixels.py [--repeats 1] [--methods pcnet,slic,...] [--out benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHOTOS = HERE.parent.parent / "shared" / "datasets" / "photos"
WORK = HERE / "_work"

# (label, source photo, size to resize to or None for the original)
IMAGES = [
    ("1K", "kite-2560x1600.jpg", (1280, 800)),
    ("2.5K", "kite-2560x1600.jpg", None),
    ("5K", "shell-5120x2880.jpg", None),
]
METHODS = ["pcnet", "scn", "slic", "watershed", "fh", "cv-slic", "slico", "seeds", "lsc"]


def prepare_images() -> dict[str, Path]:
    """Real photographs at the three sizes (the 1K one is a Lanczos-resized copy, JPEG quality 95)."""
    from PIL import Image

    WORK.mkdir(exist_ok=True)
    paths = {}
    for label, name, size in IMAGES:
        src = PHOTOS / name
        if size is None:
            paths[label] = src
            continue
        dst = WORK / f"{src.stem.split('-')[0]}-{size[0]}x{size[1]}.jpg"
        if not dst.exists():
            Image.open(src).convert("RGB").resize(size, Image.LANCZOS).save(dst, quality=95)
        paths[label] = dst
    return paths


def prepare_checkpoints() -> dict[str, Path]:
    import torch

    from uhrseg.models import PCNet, SCN, save_checkpoint

    WORK.mkdir(exist_ok=True)
    out = {}
    for cls in (PCNet, SCN):
        torch.manual_seed(0)
        out[cls.name] = save_checkpoint(WORK / f"{cls.name}-untrained.pt", cls().eval(),
                                        training={"note": "untrained, benchmark only"})
    return out


def worker(image: str, method: str, n: int, weights: str | None) -> None:
    """One measured run; prints one JSON line."""
    import torch

    torch.set_num_threads(torch.get_num_threads())
    from uhrseg import SuperpixelPredictor, read_image
    from uhrseg.memory import peak_rss_bytes

    t0 = time.perf_counter()
    img = read_image(image)
    t_read = time.perf_counter() - t0
    predictor = SuperpixelPredictor(method, device="cpu", weights=weights)
    t1 = time.perf_counter()
    result = predictor.run(img, n)
    t_run = time.perf_counter() - t1
    print(json.dumps({"read_s": t_read, "superpixels_s": t_run, "stages_s": result.timings,
                      "k": result.n_produced, "peak_rss_bytes": peak_rss_bytes(),
                      "width": img.shape[1], "height": img.shape[0]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sizes", default="1K,2.5K,5K")
    parser.add_argument("--n-segments", type=int, default=5000)
    parser.add_argument("--extra", default="pcnet:5K:50000",
                        help="more runs as method:size:n, comma-separated")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--worker", nargs=4, metavar=("IMAGE", "METHOD", "N", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        image, method, n, weights = args.worker
        worker(image, method, int(n), None if weights == "-" else weights)
        return

    images = prepare_images()
    ckpts = prepare_checkpoints()
    runs = [(m, s, args.n_segments) for s in args.sizes.split(",") for m in args.methods.split(",")]
    runs += [(m, s, int(n)) for m, s, n in (e.split(":") for e in args.extra.split(",") if e)]
    results = []
    for i, (method, size, n) in enumerate(runs, 1):
        samples = []
        for _ in range(args.repeats):
            cmd = [sys.executable, __file__, "--worker", str(images[size]), method, str(n),
                   str(ckpts.get(method, "-"))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"run failed: {method} {size} n={n}")
            samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        row = {
            "method": method, "size": size, "n_segments": n,
            "width": samples[0]["width"], "height": samples[0]["height"], "k": samples[0]["k"],
            "read_s": statistics.median(s["read_s"] for s in samples),
            "superpixels_s": statistics.median(s["superpixels_s"] for s in samples),
            "peak_rss_mb": max(s["peak_rss_bytes"] for s in samples) / 2**20,
            "stages_s": samples[0]["stages_s"],
            "repeats": args.repeats,
        }
        results.append(row)
        print(f"[{i}/{len(runs)}] {method:9s} {size:4s} n={n:<6d} K={row['k']:<6d} "
              f"{row['superpixels_s']:7.2f} s  {row['peak_rss_mb']:7.0f} MB", flush=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
            "date": time.strftime("%Y-%m-%d")}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print_table(results)


def print_table(results: list[dict]) -> None:
    print("| method | image | n | K | superpixels (s) | decode (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['size']} ({r['width']}x{r['height']}) | {r['n_segments']} | {r['k']} | "
              f"{r['superpixels_s']:.2f} | {r['read_s']:.2f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
