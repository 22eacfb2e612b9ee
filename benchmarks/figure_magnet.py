"""MagNet scale by scale on a real image: the running prediction after each stage and the points it refined.

Top row: the image, the ground truth (when the dataset is given) and the running prediction ``Y`` after each
stage (at that scale's map resolution, shown at one size). Bottom row: under the ground truth, the errors of
the final map; under each stage, the points it replaced by the refinement module's prediction (white).

Usage::

    python benchmarks/figure_magnet.py IMAGE [--dataset DIR] --weights drone \\
        --out docs/images/magnet-stages.png [--scales 3] [--side 420]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("--dataset", type=Path, help="the image's dataset folder (for its ground truth)")
    parser.add_argument("--weights", default="drone")
    parser.add_argument("--scales", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--side", type=int, default=420, help="width of each panel in pixels")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from uhrseg import SemanticPredictor, read_image
    from uhrseg.datasets import open_semantic_dataset
    from uhrseg.io import to_uint8
    from uhrseg.metrics import confusion_matrix, mean_iou, pixel_accuracy

    predictor = SemanticPredictor("magnet", weights=args.weights, device="cpu", scales=args.scales)
    image = to_uint8(read_image(args.image))
    classes, stages = predictor.magnet_trace(image)
    truth = None
    if args.dataset is not None:
        data = open_semantic_dataset(args.dataset)
        truth = data.class_map(args.image.stem)
        evaluated = data.class_table.evaluated
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(predictor.palette)] = predictor.palette
    h, w = image.shape[:2]
    size = (args.side, round(h * args.side / w))

    def show(labels: np.ndarray) -> np.ndarray:
        return palette[cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)]

    top = [("image", cv2.resize(image, size, interpolation=cv2.INTER_AREA))]
    if truth is not None:
        top.append(("ground truth", show(truth)))
    bottom = [None] * len(top)  # each stage's points sit under its running map
    for i, (factor, y_map, refined) in enumerate(stages):
        title = f"Y after stage {i} (scale {factor:g})"
        if truth is not None:
            up = cv2.resize(y_map, (w, h), interpolation=cv2.INTER_NEAREST)
            matrix = confusion_matrix(up, truth, len(predictor.class_names))
            title += (f"\npixel accuracy {100 * pixel_accuracy(matrix):.1f} %, "
                      f"mIoU {100 * mean_iou(matrix, evaluated):.1f} %")
        top.append((title, show(y_map)))
        mask = cv2.resize(refined.astype(np.uint8) * 255, size, interpolation=cv2.INTER_NEAREST)
        bottom.append((f"points refined at stage {i}: {100 * refined.mean():.0f} %",
                       np.repeat(mask[:, :, None], 3, axis=2)))
    if truth is not None:
        wrong = (classes != truth) & np.isin(truth, evaluated)  # labelled pixels the final map gets wrong
        err = cv2.resize(wrong.astype(np.uint8) * 255, size, interpolation=cv2.INTER_NEAREST)
        bottom[1] = (f"errors of the final map ({100 * wrong.mean():.0f} % of pixels)",
                     np.repeat(err[:, :, None], 3, axis=2))
    cols = max(len(top), len(bottom))
    fig, axes = plt.subplots(2, cols, figsize=(cols * args.side / 100, 2 * (size[1] / 100 + 0.6)), dpi=100)
    for row, panels in enumerate((top, bottom)):
        for j in range(cols):
            ax = axes[row, j]
            ax.axis("off")
            if j < len(panels) and panels[j] is not None:
                ax.imshow(panels[j][1])
                ax.set_title(panels[j][0], fontsize=9)
    fig.suptitle(f"MagNet ({args.scales} scales, {args.weights} weights) on {args.image.name}", fontsize=11)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    plt.close(fig)
    print(args.out)


if __name__ == "__main__":
    main()
