"""Class maps sharpened at full resolution: superpixel pooling (the bridge between uhrseg's superpixels and its
segmentation networks) and the comparators (nearest, bilinear, guided filter), behind one interface."""

import lazy_loader

# Submodules load on first use, so that ``import uhrseg`` (and the command line) does not load torch,
# numba or OpenCV before they are needed (lazy_loader: the scientific Python ecosystem's SPEC 1).
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "refine": [
        "ClassRefinement", "ProbabilityRows", "REFINEMENTS", "infer_stride", "refine_class_store",
        "refine_classes", "refine_with_superpixels", "superpixels_into"
    ],
})
