"""The GPU path of the superpixel networks, in one command for a session that is lent a GPU (issue 13).

Sections, each printed as it finishes and written to ``--out`` (JSON):

1. **correctness**: PCNet and SCN (packaged weights, torch backend) on the GPU against the CPU, on the first
   ``--bsds-images`` BSDS500 test images at n = 600 and the 2.5K and 5K photographs at n = 5000: pixels whose
   labels differ before the connectivity step (raw network labels) and after the whole pipeline;
2. **tiling**: the cell-id map of the 5K photograph with small tiles and strips against one untiled pass, on
   the GPU (the torch backend is bit-identical on the CPU; this says whether it is on the GPU);
3. **half precision**: the network with ``SuperpixelPredictor(precision="fp16" | "bf16")`` (``torch.autocast``;
   ``uhrseg superpixels --precision``) against float32 on the device: differing raw labels and the network time
   (each precision timed after one warm-up run)
   (``bench_precision.py --device cuda`` adds BR / BP / ASA);
4. **sizes**: 1K to 20K (the images of ``bench_superpixels.py``), PCNet and SCN: the network stage with the
   default tiles and untiled (one trunk tile, one head strip: the memory the paper's claim is about, "SCN fails
   above about 3.5K on 11 GB, PCNet reaches 5K"), seconds and peak GPU memory (``max_memory_allocated``), out
   of memory recorded as such, on the grid of n cells as in the papers; and the whole in-memory pipeline with
   the predictor's defaults (1.5 n cells merged back to n since the twelfth session; connectivity, merge and
   refinement on the CPU) for sizes up to 10K.

``--device cpu`` runs the same code on the CPU (no memory column), to check the script
where no GPU is lent. Usage::

    python benchmarks/bench_gpu.py [--device cuda] [--sizes 1K,2.5K,5K,10K,20K] [--bsds-images 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from bench_precision import precisions_on
from bench_superpixels import PHOTOS, prepare_images
from uhrseg import SuperpixelPredictor
from uhrseg.grid.geometry import CellGrid
from uhrseg.inference.network import cell_id_map
from uhrseg.inference.resize import grid_shape_for, network_inputs
from uhrseg.io import open_image, read_image
from uhrseg.io.sources import ArraySource, TiffSource

HERE = Path(__file__).resolve().parent
BSDS = HERE.parent.parent / "shared" / "datasets" / "BSDS500" / "images" / "test"
SIZE_N = {"1K": 5000, "2.5K": 5000, "5K": 5000, "10K": 20000, "20K": 100000}
UNTILED = 10**6  # a tile and strip larger than any input: one pass


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def load(path: Path) -> np.ndarray:
    source = open_image(path)
    return source.read_rows(0, source.shape[0]) if isinstance(source, TiffSource) else source.array


def network_input_for(image: np.ndarray, n: int, model) -> tuple[np.ndarray, np.ndarray | None, CellGrid]:
    """The network input, the guide image (None for an unguided network) and the grid of n cells."""
    rows, cols = grid_shape_for(image.shape[0], image.shape[1], n)
    grid = CellGrid(rows * 16, cols * 16)
    x, guide = network_inputs(ArraySource(image), grid, model.upscale, model.uses_guide)
    return x, guide, grid


def correctness(device: torch.device, bsds_images: int) -> list[dict]:
    jobs = [(p, 600) for p in sorted(BSDS.glob("*.jpg"))[:bsds_images]]
    jobs += [(PHOTOS / "kite-2560x1600.jpg", 5000), (PHOTOS / "shell-5120x2880.jpg", 5000)]
    rows = []
    for method in ("pcnet", "scn"):
        cpu = SuperpixelPredictor(method, device="cpu", backend="torch")
        gpu = SuperpixelPredictor(method, device=str(device), backend="torch")
        raw_differ = final_differ = pixels = 0
        for path, n in jobs:
            image = read_image(path)
            raw_differ += int((cpu.run(image, n, connectivity=False).labels
                               != gpu.run(image, n, connectivity=False).labels).sum())
            final_differ += int((cpu.predict(image, n) != gpu.predict(image, n)).sum())
            pixels += image.shape[0] * image.shape[1]
        rows.append({"method": method, "images": len(jobs), "pixels": pixels, "raw_differ": raw_differ,
                     "final_differ": final_differ})
        print(json.dumps({"correctness": rows[-1]}), flush=True)
    return rows


def tiling(device: torch.device) -> list[dict]:
    image = read_image(PHOTOS / "shell-5120x2880.jpg")
    rows = []
    for method in ("pcnet", "scn"):
        model = SuperpixelPredictor(method, device=str(device), backend="torch").model
        x, guide, grid = network_input_for(image, 5000, model)
        whole = cell_id_map(model, x, grid, device, UNTILED, UNTILED, guide)
        tiled = cell_id_map(model, x, grid, device, 128, 2**16, guide)
        rows.append({"method": method, "differ": int((whole != tiled).sum()), "pixels": int(whole.size)})
        print(json.dumps({"tiling": rows[-1]}), flush=True)
    return rows


def half_precision(device: torch.device) -> list[dict]:
    image = read_image(PHOTOS / "shell-5120x2880.jpg")
    rows = []
    for method in ("pcnet", "scn"):
        reference_predictor = SuperpixelPredictor(method, device=str(device), backend="torch")
        reference_predictor.run(image, 5000, connectivity=False)  # warm-up, as for the other precisions
        reference = reference_predictor.run(image, 5000, connectivity=False)
        for precision in [p for p in precisions_on(str(device)) if p != "fp32"]:  # no bf16 before Ampere
            # the product's path: SuperpixelPredictor(precision=...), i.e. uhrseg superpixels --precision
            predictor = SuperpixelPredictor(method, device=str(device), backend="torch", precision=precision)
            predictor.run(image, 5000, connectivity=False)  # warm-up (kernel selection)
            result = predictor.run(image, 5000, connectivity=False)
            rows.append({"method": method, "dtype": precision,
                         "raw_differ": int((result.labels != reference.labels).sum()),
                         "pixels": int(result.labels.size), "network_s": round(result.timings["network"], 4),
                         "network_fp32_s": round(reference.timings["network"], 4)})
            print(json.dumps({"half": rows[-1]}), flush=True)
    return rows


def sizes(device: torch.device, labels: list[str]) -> list[dict]:
    paths = prepare_images()
    rows = []
    for label in labels:
        image = load(paths[label])
        n = SIZE_N[label]
        for method in ("pcnet", "scn"):
            predictor = SuperpixelPredictor(method, device=str(device), backend="torch")
            predictor.run(image[:256, :256], 64)  # warm-up
            x, guide, grid = network_input_for(image, n, predictor.model)
            row = {"size": label, "height": image.shape[0], "width": image.shape[1], "n": n, "method": method}
            for name, tile, strip in (("tiled", 512, 2**19), ("untiled", UNTILED, UNTILED)):
                peak_reset(device)
                try:
                    sync(device)
                    t0 = time.perf_counter()
                    cell_id_map(predictor.model, x, grid, device, tile, strip, guide)
                    sync(device)
                    row[f"network_{name}_s"] = round(time.perf_counter() - t0, 4)
                    row[f"network_{name}_peak_mb"] = peak_mb(device)
                except torch.cuda.OutOfMemoryError:
                    row[f"network_{name}_s"] = "out of memory"
                    row[f"network_{name}_peak_mb"] = None
            if label in ("1K", "2.5K", "5K", "10K"):
                peak_reset(device)
                t0 = time.perf_counter()
                result = predictor.run(image, n)
                row["pipeline_s"] = round(time.perf_counter() - t0, 4)
                row["pipeline_stages_s"] = {k: round(v, 4) for k, v in result.timings.items()}
                row["pipeline_peak_mb"] = peak_mb(device)
                row["k"] = result.n_produced
            rows.append(row)
            print(json.dumps({"sizes": row}), flush=True)
            del predictor
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--sizes", default="1K,2.5K,5K,10K,20K")
    parser.add_argument("--bsds-images", type=int, default=20)
    parser.add_argument("--sections", default="correctness,tiling,half,sizes")
    parser.add_argument("--out", type=Path, default=HERE / "results-gpu.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    sections = args.sections.split(",")
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    print(json.dumps({"meta": meta}), flush=True)
    results: dict = {"meta": meta}
    runs = {"correctness": lambda: correctness(device, args.bsds_images), "tiling": lambda: tiling(device),
            "half": lambda: half_precision(device), "sizes": lambda: sizes(device, args.sizes.split(","))}
    for name, section in runs.items():
        if name not in sections:
            continue
        results[name] = section()
        tmp = args.out.with_name(args.out.name + ".part")  # written after every section: a run cut short keeps
        tmp.write_text(json.dumps(results, indent=1) + "\n")  # what it measured
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
