"""The grid of n cells against 1.5 n cells merged back to n: PCNet superpixels on a real labelled frame.

Three panels at full resolution: the ground truth's boundaries over the image, PCNet with ``oversegmentation=1``
(the papers' grid) and with the default 1.5 (:func:`uhrseg.grid.merge_superpixels`), each with its K, ASA and
BR at r = 1 in the title. Superpixels whose majority ground-truth class covers less than 90 % of them are
tinted, so what ASA counts is visible.

Usage::

    python benchmarks/figure_merge.py ../shared/datasets/semantic-drone/more --name 001 -n 600 \\
        --out docs/images/merge-drone.png
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", help="a labelled folder (images/ + labels/) or another open_dataset spec")
    parser.add_argument("--name", default=None, help="image name (default: the first)")
    parser.add_argument("-n", "--n-segments", type=int, default=600)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uhrseg import SuperpixelPredictor
    from uhrseg.datasets.readers import open_dataset
    from uhrseg.grid import boundary_mask
    from uhrseg.metrics.superpixel import achievable_segmentation_accuracy, boundary_recall_precision

    data = open_dataset(args.dataset)
    name = args.name or data.names[0]
    image, gt = data.image(name), data.ground_truths(name)[0]
    panels = [("ground truth", gt, None)]
    for factor in (1.0, 1.5):
        labels = SuperpixelPredictor("pcnet", device="cpu", oversegmentation=factor).predict(image, args.n_segments)
        br, _ = boundary_recall_precision(labels, gt, 1)
        asa = achievable_segmentation_accuracy(labels, gt)
        title = (f"oversegmentation {factor:g}{' (default)' if factor == 1.5 else ' (grid of n cells)'}: "
                 f"K {labels.max() + 1}, ASA {asa:.4f}, BR {br:.3f}")
        panels.append((title, labels, gt))
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.4))
    for ax, (title, labels, truth) in zip(axes, panels):
        shown = image.astype(np.float32) / 255.0
        if truth is not None:  # tint superpixels whose majority class covers < 90 % of them
            k = labels.max() + 1
            counts = np.bincount(labels.ravel() * (truth.max() + 1) + truth.ravel(),
                                 minlength=k * (truth.max() + 1)).reshape(k, -1)
            impure = counts.max(1) < 0.9 * counts.sum(1)
            mask = impure[labels]
            shown[mask] = 0.6 * shown[mask] + 0.4 * np.array([1.0, 0.85, 0.0])
        shown[boundary_mask(labels)] = (1.0, 0.1, 0.1)
        ax.imshow(shown)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    where = "/".join(Path(args.dataset).parts[-2:])
    fig.suptitle(f"PCNet, n = {args.n_segments}, {where} {name} (yellow: superpixels < 90 % one class)",
                 fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(".part." + args.out.name)
    fig.savefig(tmp, dpi=80, format="png")
    os.replace(tmp, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
