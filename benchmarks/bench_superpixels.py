"""End-to-end time and peak memory per method on real photographs from 1K to 20K (see README.md here).

Each run happens in a fresh Python process, so its peak resident memory (VmHWM) is its own. The process
imports everything, builds the method and warms it up on a 64 x 64 crop (numba kernels, oneDNN), resets its
peak-memory counter, and then measures **end to end**: decode the file, compute the superpixels, write the
label map (``write_labels``: 16-bit PNG while ids fit, else TIFF; streamed runs write a tiled BigTIFF). Medians
over ``--repeats`` runs; the peak RSS is the largest.

1K is ``kite-2560x1600.jpg`` Lanczos-resized to 1280 x 800, 2.5K the kite itself, 5K ``shell-5120x2880.jpg``.
10K (10240 x 5760) and 20K (20000 x 20000) are assembled from tiles of the two 5120 x 2880 photographs
(shell, volna) and stored as JPEG-compressed tiled TIFFs (quality 90, 512 x 512 tiles), which the network
methods read band by band; the 20K image is streamed (``--stream``: label map, CIELAB copy and guide image on disk).

Usage::

    python benchmarks/bench_superpixels.py [--repeats 3] [--runs pcnet:5K:5000,slic:5K:5000,...]
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
PHOTOS = HERE.parent.parent / "shared" / "datasets" / "photos"
WORK = HERE / "_work"

DEFAULT_RUNS = ",".join(
    [f"{m}:{s}:5000" for s in ("1K", "2.5K", "5K") for m in ("pcnet", "slic", "seeds")]
    + ["pcnet:10K:20000", "seeds:10K:20000", "slic:10K:20000", "pcnet:20K:100000"]
)


def prepare_images() -> dict[str, Path]:
    """The benchmark images (made once under benchmarks/_work)."""
    import numpy as np
    import tifffile
    from PIL import Image

    WORK.mkdir(exist_ok=True)
    paths = {"2.5K": PHOTOS / "kite-2560x1600.jpg", "5K": PHOTOS / "shell-5120x2880.jpg"}
    small = WORK / "kite-1280x800.jpg"
    if not small.exists():
        Image.open(paths["2.5K"]).convert("RGB").resize((1280, 800), Image.LANCZOS).save(small, quality=95)
    paths["1K"] = small
    for label, (h, w) in {"10K": (5760, 10240), "20K": (20000, 20000)}.items():
        path = WORK / f"mosaic-{w}x{h}.tif"
        paths[label] = path
        if path.exists():
            continue
        photos = [np.asarray(Image.open(PHOTOS / n).convert("RGB"))
                  for n in ("shell-5120x2880.jpg", "volna-5120x2880.jpg")]
        mosaic = np.empty((h, w, 3), np.uint8)
        for i, y in enumerate(range(0, h, 2880)):
            for j, x in enumerate(range(0, w, 5120)):
                tile = photos[(i + j) % 2]
                tile = tile[:, ::-1] if (i // 2 + j) % 2 else tile  # mirrored every other pair: fewer repeats
                mosaic[y : y + 2880, x : x + 5120] = tile[: h - y, : w - x]
        tmp = path.with_suffix(".part")
        try:  # JPEG tiles need imagecodecs; the GPU machine's image may lack it (then uncompressed tiles)
            import imagecodecs  # noqa: F401

            codec = {"compression": "jpeg", "compressionargs": {"level": 90}}
        except ImportError:
            codec = {}
        tifffile.imwrite(tmp, mosaic, tile=(512, 512), photometric="rgb", bigtiff=True, **codec)
        tmp.rename(path)
    return paths


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def worker(image: str, method: str, n: int, stream: bool, out_dir: str) -> None:
    """One measured run; prints one JSON line."""
    import numpy as np

    from uhrseg import SuperpixelPredictor
    from uhrseg.io import label_suffix, open_image, read_image, write_label_store, write_labels
    from uhrseg.io.sources import TiffSource
    from uhrseg.memory import peak_rss_bytes, reset_peak_rss
    from uhrseg.stores import FileStore

    predictor = SuperpixelPredictor(method, device="cpu")
    warm = np.asarray(read_image(PHOTOS / "kite-2560x1600.jpg")[:64, :64])
    predictor.run(warm, 16)
    out = Path(out_dir)
    reset_peak_rss()
    rss_start = _rss_bytes()
    t0 = time.perf_counter()
    if stream:
        source = open_image(image)
        h, w = source.shape[:2]
        with FileStore(out / "labels.i32", (h, w), np.int32) as labels, \
                FileStore(out / "lab.u8", (h, w, 3), np.uint8) as lab:
            result = predictor.run_source(source, n, labels, lab, work_dir=out)  # the guide image in a file too
            t1 = time.perf_counter()
            write_label_store(out / "labels.tif", labels)
        k, stages, t_decode, rss_decoded = result.n_produced, result.timings, 0.0, rss_start
    else:
        if method in ("pcnet", "scn"):
            source = open_image(image)
            img = source.read_rows(0, source.shape[0]) if isinstance(source, TiffSource) else source.array
        else:
            img = read_image(image)
        t_decode = time.perf_counter() - t0
        rss_decoded = _rss_bytes()
        result = predictor.run(img, n)
        t1 = time.perf_counter()
        suffix = label_suffix(result.labels, "auto")
        write_labels(out / f"labels{suffix}", result.labels, suffix)
        k, stages, (h, w) = result.n_produced, result.timings, img.shape[:2]
    t_end = time.perf_counter()
    print(json.dumps({"total_s": t_end - t0, "decode_s": t_decode, "write_s": t_end - t1, "stages_s": stages,
                      "k": k, "peak_rss_bytes": peak_rss_bytes(), "rss_start_bytes": rss_start,
                      "rss_decoded_bytes": rss_decoded, "width": w, "height": h}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="METHOD:SIZE:N, comma-separated")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--worker", nargs=5, metavar=("IMAGE", "METHOD", "N", "STREAM", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        image, method, n, stream, out_dir = args.worker
        worker(image, method, int(n), stream == "1", out_dir)
        return

    images = prepare_images()
    runs = [(m, s, int(n)) for m, s, n in (r.split(":") for r in args.runs.split(",") if r)]
    results = []
    for i, (method, size, n) in enumerate(runs, 1):
        samples = []
        stream = size == "20K"
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(dir=WORK) as out_dir:
                cmd = [sys.executable, __file__, "--worker", str(images[size]), method, str(n), str(int(stream)),
                       out_dir]
                t = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                wall = time.perf_counter() - t
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                raise SystemExit(f"run failed: {method} {size} n={n}")
            sample = json.loads(proc.stdout.strip().splitlines()[-1])
            sample["process_wall_s"] = wall
            samples.append(sample)
        med = lambda key: statistics.median(s[key] for s in samples)  # noqa: E731
        peak = max(s["peak_rss_bytes"] for s in samples)
        row = {
            "method": method, "size": size, "n_segments": n, "streamed": stream,
            "width": samples[0]["width"], "height": samples[0]["height"], "k": samples[0]["k"],
            "total_s": med("total_s"), "decode_s": med("decode_s"), "write_s": med("write_s"),
            "process_wall_s": med("process_wall_s"), "runs_s": [round(s["total_s"], 3) for s in samples],
            "peak_rss_mb": peak / 2**20,
            "beyond_decoded_mb": max(s["peak_rss_bytes"] - s["rss_decoded_bytes"] for s in samples) / 2**20,
            "stages_s": {k: statistics.median(s["stages_s"][k] for s in samples) for k in samples[0]["stages_s"]},
            "repeats": args.repeats,
        }
        results.append(row)
        print(f"[{i}/{len(runs)}] {method:6s} {size:4s} n={n:<6d} K={row['k']:<6d} {row['total_s']:7.2f} s "
              f"{row['runs_s']}  peak {row['peak_rss_mb']:6.0f} MB  beyond decoded {row['beyond_decoded_mb']:6.0f} MB",
              flush=True)
        meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d")}
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    print_table(results)


def print_table(results: list[dict]) -> None:
    ref = {(r["method"], r["size"]): r["total_s"] for r in results}
    print("| method | image | n | K | end to end (s), median | x faster than SLIC | x faster than SEEDS "
          "| peak RSS (MB) | beyond decoded image (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratios = []
        for base in ("slic", "seeds"):
            b = ref.get((base, r["size"]))
            ratios.append(f"{b / r['total_s']:.2f}" if b else "-")
        print(f"| {r['method']} | {r['size']} ({r['width']}x{r['height']}) | {r['n_segments']} | {r['k']} | "
              f"{r['total_s']:.2f} | {ratios[0]} | {ratios[1]} | {r['peak_rss_mb']:.0f} | "
              f"{r['beyond_decoded_mb']:.0f} |")


if __name__ == "__main__":
    main()
