"""Full-resolution crops of a real image: the class map unrefined, with the guided filter and refined by PCNet
superpixels, beside the image and the ground truth.

Usage::

    python benchmarks/figure_refine.py IMAGE --dataset DIR --weights drone --out docs/images/refine-crops.png \\
        [--model isdnet] [--crop Y,X,SIDE ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("--dataset", type=Path, required=True, help="the image's dataset folder (ground truth)")
    parser.add_argument("--model", default="isdnet")
    parser.add_argument("--weights", default="drone")
    parser.add_argument("--crop", action="append", metavar="Y,X,SIDE",
                        help="a crop at full resolution (default: two 240-pixel crops around class boundaries)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uhrseg import SemanticPredictor, read_image
    from uhrseg.datasets import open_semantic_dataset
    from uhrseg.grid import boundary_mask
    from uhrseg.io import to_uint8
    from uhrseg.semantic import ClassRefinement, refine_classes

    image = to_uint8(read_image(args.image))
    truth = open_semantic_dataset(args.dataset).class_map(args.image.stem)
    predictor = SemanticPredictor(args.model, weights=args.weights, device="cpu")
    probs = predictor.run(image).probabilities
    maps = {name: refine_classes(probs, ClassRefinement(name), image=image)
            for name in ("bilinear", "guided", "superpixels")}
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(predictor.palette)] = predictor.palette
    if args.crop:
        crops = [tuple(int(v) for v in c.split(",")) for c in args.crop]
    else:  # where the ground truth has the most class boundary
        edges = boundary_mask(truth.astype(np.int32))
        side = 240
        h, w = truth.shape
        scores = [(edges[y : y + side, x : x + side].sum(), y, x) for y in range(0, h - side, side // 2)
                  for x in range(0, w - side, side // 2)]
        crops = [(y, x, side) for _, y, x in sorted(scores, reverse=True)[:2]]
    titles = ["image", "ground truth", f"{args.model}, bilinear (unrefined)", "guided filter",
              "PCNet superpixels"]
    fig, axes = plt.subplots(len(crops), 5, figsize=(15, 3.1 * len(crops)), dpi=100, squeeze=False)
    for row, (y, x, side) in enumerate(crops):
        sl = (slice(y, y + side), slice(x, x + side))
        panels = [image[sl], palette[truth[sl]]] + [palette[maps[k][sl]] for k in ("bilinear", "guided",
                                                                                    "superpixels")]
        for ax, panel, title in zip(axes[row], panels, titles):
            ax.imshow(panel, interpolation="nearest")
            ax.set_title(f"{title}" if row == 0 else "", fontsize=10)
            ax.axis("off")
        axes[row, 0].set_title(f"image, rows {y}-{y + side}, columns {x}-{x + side}", fontsize=10)
    fig.suptitle(f"{args.image.name}: {side} x {side} crops at full resolution", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    plt.close(fig)
    print(args.out)


if __name__ == "__main__":
    main()
