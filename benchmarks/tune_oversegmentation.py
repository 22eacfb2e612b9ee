"""BR, BP, ASA and K of a superpixel network at several oversegmentation factors (and merge texture weights), on a
labelled split.

``oversegmentation = R`` makes ``round(R n)`` grid cells and merges the most similar adjacent superpixels back to
``n`` before the refinement (:class:`uhrseg.SuperpixelPredictor`, :func:`uhrseg.grid.merge_superpixels`); 1 is
the papers' grid. ``--texture-weights`` also sweeps the weight of the merge's texture feature
(``merge_texture_weight``; 0: colour alone). Every other setting is the predictor's default. Means over all
(image, ground truth) pairs go to ``OUT.csv``, one row per (factor, texture weight).

Usage::

    python benchmarks/tune_oversegmentation.py --dataset bsds500:val --factors 1,1.5,2 --jobs 2 \\
        --out docs/results/refine-tuning/oversegmentation-bsds500-val
    python benchmarks/tune_oversegmentation.py --dataset ../shared/datasets/semantic-drone/more --images 30 \\
        --tolerance 1 --factors 1,1.25,1.5,2 --out docs/results/refine-tuning/oversegmentation-drone-more
    python benchmarks/tune_oversegmentation.py --dataset bsds500:val --factors 1.5 --texture-weights 0,0.75,1 \\
        --out docs/results/refine-tuning/merge-texture-bsds500-val

Use splits the weights were not trained on and that the reports do not test on.
"""

from __future__ import annotations

from pathlib import Path

from _scoring import pair_sums, split_parser, summed_over_images, write_means  # benchmarks/_scoring.py


def _score_image(task: tuple) -> list[list[float]]:
    """Worker: one image -> per (factor, texture weight) [sum BR, sum BP, sum ASA, K, pairs]."""
    spec, root, method, weights, n_segments, settings, tolerance, name = task
    import torch

    from uhrseg import SuperpixelPredictor
    from uhrseg.datasets.readers import open_dataset

    torch.set_num_threads(1)
    dataset = open_dataset(spec, root)
    image, gts = dataset.image(name), dataset.ground_truths(name)
    return [pair_sums(SuperpixelPredictor(method, device="cpu", weights=weights, oversegmentation=factor,
                                          merge_texture_weight=texture).predict(image, n_segments), gts, tolerance)
            for factor, texture in settings]


def main() -> None:
    parser = split_parser(__doc__)
    parser.add_argument("--method", default="pcnet", choices=("pcnet", "scn"))
    parser.add_argument("--weights", default=None, help="checkpoint or packaged name (default: the packaged one)")
    parser.add_argument("--factors", default="1,1.5,2", help="comma-separated oversegmentation factors >= 1")
    parser.add_argument("--texture-weights", default=None,
                        help="comma-separated merge texture weights >= 0 (default: the predictor's)")
    parser.add_argument("--out", type=Path, required=True, help="output stem: OUT.csv")
    args = parser.parse_args()

    from uhrseg.datasets.readers import open_dataset

    factors = [float(v) for v in args.factors.split(",") if v.strip()]
    if args.texture_weights is None:
        settings, columns, rows = [(f, None) for f in factors], ["oversegmentation"], [(f,) for f in factors]
    else:
        textures = [float(v) for v in args.texture_weights.split(",") if v.strip()]
        settings = [(f, t) for f in factors for t in textures]
        columns, rows = ["oversegmentation", "texture_weight"], settings
    names = open_dataset(args.dataset, args.bsds500_root).names[: args.images]
    tasks = [(args.dataset, args.bsds500_root, args.method, args.weights, args.n_segments, settings, args.tolerance,
              n) for n in names]
    totals = summed_over_images(_score_image, tasks, args.jobs, len(settings))
    write_means(args.out, columns, rows, totals, len(names))


if __name__ == "__main__":
    main()
