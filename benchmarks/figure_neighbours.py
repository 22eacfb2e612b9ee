"""A network's own superpixels (no refinement) beside another's, and which neighbour cell each pixel picks.

Two checkpoints side by side on one BSDS500 image: the raw labels' boundaries (``--methods pcnet:refine=0``) and
a map of the chosen neighbour of ``Q`` (one colour per cell of the 3 x 3 neighbourhood). A network that uses
only the top and centre cells (the packaged ``pcnet.pt`` until 2026-12-05) leaves every vertical boundary on a
grid line; the map shows it at a glance.

Usage::

    python benchmarks/figure_neighbours.py A.pt B.pt --labels "before,after" --image 101085 --split val \\
        --n-segments 600 --out docs/results/bsds500-pcnet-kd/neighbours.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

NAMES = ("top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs=2, type=Path, help="two PCNet or SCN checkpoints")
    parser.add_argument("--labels", default="A,B", help="their titles, comma-separated")
    parser.add_argument("--image", default="101085", help="BSDS500 image name")
    parser.add_argument("--split", default="val")
    parser.add_argument("--bsds500-root", default="../shared/datasets/BSDS500")
    parser.add_argument("--n-segments", type=int, default=600)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch
    from skimage.segmentation import find_boundaries

    from uhrseg.datasets import BSDS500
    from uhrseg.inference.network import cell_id_map
    from uhrseg.inference.resize import network_inputs, output_grid, resize_image
    from uhrseg.io.sources import ArraySource
    from uhrseg.models import load_model

    image = BSDS500(args.bsds500_root, args.split).image(args.image)
    titles = args.labels.split(",")
    colours = ListedColormap(plt.get_cmap("tab10").colors[:9])
    fig, axes = plt.subplots(2, 2, figsize=(10, 10 * image.shape[0] / image.shape[1] + 0.8))
    for col, (path, title) in enumerate(zip(args.weights, titles)):
        model = load_model(path)
        grid = output_grid(image.shape[0], image.shape[1], args.n_segments, model.cell_size)
        x, guide = network_inputs(ArraySource(image), grid, model.upscale, model.uses_guide)
        ids = cell_id_map(model, x, grid, torch.device("cpu"), guide=guide)
        ys, xs = np.mgrid[: grid.height, : grid.width]
        dy = ids // grid.n_cols - ys // grid.cell_size
        dx = ids % grid.n_cols - xs // grid.cell_size
        choice = (3 * (dy + 1) + dx + 1).clip(0, 8)
        shown = (resize_image(image, grid.height, grid.width) * 255).astype(np.uint8)
        edges = find_boundaries(ids, mode="inner")
        overlay = shown.copy()
        overlay[edges] = (255, 40, 40)
        axes[0, col].imshow(overlay)
        axes[0, col].set_title(f"{title}: own labels (n = {args.n_segments})")
        axes[1, col].imshow(choice, cmap=colours, vmin=-0.5, vmax=8.5, interpolation="nearest")
        used = np.bincount(choice.ravel(), minlength=9) / choice.size
        axes[1, col].set_title("chosen neighbour: " + ", ".join(f"{NAMES[k]} {used[k]:.0%}"
                                                                for k in range(9) if used[k] >= 0.005),
                               fontsize=8)
        axes[1, col].legend(handles=[Patch(color=colours.colors[k], label=NAMES[k]) for k in range(9)
                                     if used[k] >= 0.005], loc="lower right", fontsize=7, framealpha=0.9)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(args.out)
    print(f"{args.out}")


if __name__ == "__main__":
    main()
