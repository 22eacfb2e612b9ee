"""Class maps sharpened at full resolution: superpixel pooling (the bridge between uhrseg's superpixels and its
segmentation networks) and the comparators (nearest, bilinear, guided filter), behind one interface."""

from .refine import REFINEMENTS, ClassRefinement, infer_stride, refine_classes, refine_with_superpixels

__all__ = ["REFINEMENTS", "ClassRefinement", "infer_stride", "refine_classes", "refine_with_superpixels"]
