"""Image input (any size and layout) and all-or-nothing output of label maps, class maps and overlays."""

import lazy_loader

# Submodules load on first use, so that ``import uhrseg`` (and the command line) does not load torch,
# numba or OpenCV before they are needed (lazy_loader: the scientific Python ecosystem's SPEC 1).
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "geo": ["NODATA_CLASS", "NODATA_LABEL", "Georeference", "read_georeference"],
    "images": ["as_rgb", "read_image", "to_uint8"],
    "outputs": [
        "LABEL_FORMATS", "commit_files", "label_suffix", "prepare_output_dir", "render_class_overlay",
        "render_overlay", "sample_label_store", "write_class_png", "write_class_store", "write_jpeg",
        "write_label_store", "write_labels", "write_overlay", "write_png", "write_pyramid"
    ],
    "sources": ["ArraySource", "TiffSource", "open_image"],
})
