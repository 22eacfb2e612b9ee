"""The README's picture of a real result: image, class map and overlay side by side, with a legend.

Runs ``SemanticPredictor`` with packaged weights on a real test image and writes a PNG.

Usage::

    python benchmarks/figure_semantic.py IMAGE --weights drone --out docs/images/semantic-drone.png [--side 640]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("--model", default="isdnet")
    parser.add_argument("--weights", default="drone")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--side", type=int, default=640, help="width of each panel in pixels")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from uhrseg import SemanticPredictor, read_image
    from uhrseg.io import render_class_overlay, to_uint8

    predictor = SemanticPredictor(args.model, weights=args.weights, device="cpu")
    image = to_uint8(read_image(args.image))
    result = predictor.run(image, probabilities=False)
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(result.palette)] = result.palette
    h, w = image.shape[:2]
    size = (args.side, round(h * args.side / w))
    panels = [cv2.resize(image, size, interpolation=cv2.INTER_AREA),
              palette[cv2.resize(result.classes, size, interpolation=cv2.INTER_NEAREST)],
              cv2.resize(render_class_overlay(image, result.classes, result.palette), size,
                         interpolation=cv2.INTER_AREA)]
    fig, axes = plt.subplots(1, 3, figsize=(3 * args.side / 100, size[1] / 100 + 0.9), dpi=100)
    for ax, panel, title in zip(axes, panels, ("image", f"classes ({args.model}, {args.weights})", "overlay")):
        ax.imshow(panel)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    present = [c for c in np.argsort(-np.bincount(result.classes.ravel(), minlength=len(result.palette)))
               if (result.classes == c).mean() > 0.002][:10]
    handles = [Patch(color=np.array(result.palette[c]) / 255, label=result.class_names[c]) for c in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(10, len(handles)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    plt.close(fig)
    print(args.out)


if __name__ == "__main__":
    main()
