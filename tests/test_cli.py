"""The ``uhrseg superpixels`` command: outputs, and every bad input from the issue (error, exit 2, no files)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import uhrseg
from conftest import PHOTOS, bsds_image_path
from test_io import BAD_KINDS, make_bad_file
from uhrseg.cli import main
from uhrseg.io import read_image


def run_cli(capsys, *argv):
    code = main(["superpixels", "-q", *map(str, argv)])
    return code, capsys.readouterr().err


def files_in(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_outputs_for_a_real_image(tmp_path, capsys):
    image = bsds_image_path()
    code, err = run_cli(capsys, image, "-n", 300, "--method", "slic", "--out", tmp_path / "out")
    assert code == 0, err
    out = tmp_path / "out"
    assert files_in(out) == ["100007_labels.png", "100007_overlay.jpg", "summary.json"]
    labels = np.asarray(Image.open(out / "100007_labels.png"))
    np.testing.assert_array_equal(labels, uhrseg.superpixels(read_image(image), 300, method="slic"))
    overlay = Image.open(out / "100007_overlay.jpg")
    assert overlay.size == (481, 321) and overlay.mode == "RGB" and overlay.format == "JPEG"
    # --overlay png: lossless, boundary pixels exactly red; the JPEG default is visually the same image
    code, err = run_cli(capsys, image, "-n", 300, "--method", "slic", "--overlay", "png", "--out", tmp_path / "png")
    assert code == 0, err
    exact = np.asarray(Image.open(tmp_path / "png" / "100007_overlay.png")).astype(int)
    from uhrseg.grid import boundary_mask
    assert (exact[boundary_mask(labels)] == (255, 32, 32)).all()
    assert np.abs(np.asarray(overlay).astype(int) - exact).mean() < 3  # grey levels of 255
    code, err = run_cli(capsys, image, "-n", 300, "--method", "slic", "--overlay", "none", "--out", tmp_path / "none")
    assert code == 0 and files_in(tmp_path / "none") == ["100007_labels.png", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["images"][0]
    assert summary["method"] == "slic" and summary["failed"] == []
    assert (entry["width"], entry["height"], entry["n_requested"]) == (481, 321, 300)
    assert entry["n_produced"] == labels.max() + 1
    assert set(entry["seconds"]) >= {"read", "segment", "connectivity", "write", "total"}
    assert entry["peak_rss_bytes"] > 50 * 2**20


def test_network_with_preview_and_formats(tmp_path, capsys, photo_path, pcnet_grid_ckpt):
    code, err = run_cli(capsys, photo_path, "-n", 2000, "--weights", pcnet_grid_ckpt, "--device", "cpu",
                        "--out", tmp_path, "--label-format", "npy")
    assert code == 0, err
    stem = photo_path.stem
    assert files_in(tmp_path) == sorted([f"{stem}_labels.npy", f"{stem}_overlay.jpg", f"{stem}_preview.jpg",
                                         "summary.json"])
    labels = np.load(tmp_path / f"{stem}_labels.npy")
    assert labels.shape == (1600, 2560) and labels.dtype == np.int32
    assert Image.open(tmp_path / f"{stem}_preview.jpg").size == (2048, 1280)
    entry = json.loads((tmp_path / "summary.json").read_text())["images"][0]
    # the grid has 1.5 x 2000 cells (the default oversegmentation), merged back to exactly 2000
    assert entry["n_produced"] == labels.max() + 1 == 2000 and entry["n_cells"] >= 3000
    assert set(entry["seconds"]) >= {"resize", "network", "connectivity", "merge", "upsample", "refine"}


def test_tiff_label_format(tmp_path, capsys):
    code, _ = run_cli(capsys, bsds_image_path(), "-n", 100, "-m", "seeds", "--out", tmp_path, "--label-format", "tiff")
    assert code == 0
    labels = tifffile.imread(tmp_path / "100007_labels.tif")
    assert labels.dtype == np.int32 and labels.shape == (321, 481)
    np.testing.assert_array_equal(labels, uhrseg.superpixels(read_image(bsds_image_path()), 100, method="seeds"))


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_image_gives_error_exit_2_and_no_files(tmp_path, capsys, kind):
    path, message = make_bad_file(tmp_path, kind)
    out = tmp_path / "out"
    code, err = run_cli(capsys, path, "--method", "slic", "--out", out)
    assert code == 2
    assert f"uhrseg: error: {path}: " in err and message in err
    assert not out.exists() and "removed the empty folder" in err  # the folder made for the outputs goes too
    out.mkdir()  # a folder the user made stays, even when empty
    code, err = run_cli(capsys, path, "--method", "slic", "--out", out)
    assert code == 2 and out.is_dir() and files_in(out) == [] and "0 of 1 images written to" in err


def test_batch_goes_on_after_a_bad_file(tmp_path, capsys):
    bad, _ = make_bad_file(tmp_path, "truncated")
    good = bsds_image_path()
    other = bsds_image_path("100039")
    out = tmp_path / "out"
    code, err = run_cli(capsys, good, bad, other, "-n", 200, "-m", "slico", "--out", out)
    assert code == 2
    assert files_in(out) == ["100007_labels.png", "100007_overlay.jpg", "100039_labels.png",
                             "100039_overlay.jpg", "summary.json"]
    assert "2 of 3 images written" in err and "1 failed" in err
    assert err.strip().splitlines()[-1].strip().startswith(str(bad))
    summary = json.loads((out / "summary.json").read_text())
    assert [f["file"] for f in summary["failed"]] == [str(bad)]


@pytest.mark.parametrize("n", [0, -3])
def test_n_segments_below_one(tmp_path, capsys, n):
    code, err = run_cli(capsys, bsds_image_path(), "-n", n, "-m", "slic", "--out", tmp_path / "out")
    assert code == 2 and "--n-segments must be >= 1" in err
    assert files_in(tmp_path / "out") == []


def test_n_segments_above_a_quarter_of_the_pixels(tmp_path, capsys):
    image = bsds_image_path()
    code, err = run_cli(capsys, image, "-n", 321 * 481 // 4 + 1, "-m", "slic", "--out", tmp_path)
    assert code == 2 and f"{image}: n_segments=38601 is more than a quarter" in err
    assert files_in(tmp_path) == []


def test_missing_weights_file(tmp_path, capsys):
    code, err = run_cli(capsys, bsds_image_path(), "--weights", tmp_path / "nope.pt", "--out", tmp_path / "out")
    assert code == 2 and "nope.pt: weights file not found" in err
    assert not (tmp_path / "out").exists()  # bad weights leave no output folder behind
    code, err = run_cli(capsys, bsds_image_path(), "--weights", tmp_path, "--out", tmp_path / "out")
    assert code == 2 and f"{tmp_path}: a folder, not a weights file" in err  # said "weights file not found"


def test_default_method_is_the_packaged_pcnet(tmp_path, capsys):
    code, err = run_cli(capsys, bsds_image_path(), "--n-segments", "600", "--out", tmp_path / "out")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["method"] == "pcnet" and summary["weights"] == "packaged" and summary["refine_iterations"] == 8
    assert (summary["refine_compactness"], summary["refine_smoothness"]) == (2.5, "auto")
    assert summary["oversegmentation"] == 1.5 and summary["merge_boundary_weight"] == 0.0
    image = summary["images"][0]
    assert image["n_produced"] == 600, image  # 900 cells merged back to exactly n
    # 481 x 321 at 900 cells: PCNet's output grid is 576 x 400, finer than the image, so the labels are not
    # upsampled and lambda is the BSDS500-tuned 150
    assert image["refine_smoothness"] == 150.0
    code, err = run_cli(capsys, bsds_image_path(), "--n-segments", "600", "--oversegmentation", "1",
                        "--out", tmp_path / "grid")
    assert code == 0, err
    image = json.loads((tmp_path / "grid" / "summary.json").read_text())["images"][0]
    assert 0.8 * 600 <= image["n_produced"] <= 1.2 * 600 and image["n_produced"] != 600, image
    # 600 cells: the output grid is 480 x 320, so the labels are hardly upsampled and lambda is 150 times
    # (321 * 481 / (320 * 480)) ** (-1/6)
    assert image["refine_smoothness"] == pytest.approx(150.0 * (321 * 481 / (320 * 480)) ** (-1 / 6))


def test_merge_boundary_weight_is_checked_and_recorded(tmp_path, capsys):
    for bad in (["--merge-boundary-weight", "-1"], ["--merge-boundary-weight", "nan"],
                ["--merge-boundary-weight", "100", "-m", "slic"],
                ["--merge-boundary-weight", "100", "--oversegmentation", "1"]):
        code, err = run_cli(capsys, bsds_image_path(), *bad, "--out", tmp_path / "bad")
        assert code == 2 and "--merge-boundary-weight is for pcnet and scn with --oversegmentation above 1" in err
        assert not (tmp_path / "bad").exists()
    code, err = run_cli(capsys, bsds_image_path(), "-n", "300", "--merge-boundary-weight", "3000",
                        "--out", tmp_path / "out")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["merge_boundary_weight"] == 3000.0 and summary["images"][0]["n_produced"] == 300
    assert summary["merge_texture_weight"] == 0.75  # the default


def test_merge_texture_weight_is_checked_and_recorded(tmp_path, capsys):
    for bad in (["--merge-texture-weight", "-1"], ["--merge-texture-weight", "inf"],
                ["--merge-texture-weight", "1", "-m", "slic"]):
        code, err = run_cli(capsys, bsds_image_path(), *bad, "--out", tmp_path / "bad")
        assert code == 2 and "--merge-texture-weight is for pcnet and scn and must be finite and >= 0" in err
        assert not (tmp_path / "bad").exists()
    code, err = run_cli(capsys, bsds_image_path(), "-n", "300", "--merge-texture-weight", "0",
                        "--out", tmp_path / "out")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["merge_texture_weight"] == 0.0 and summary["images"][0]["n_produced"] == 300


def test_mismatched_weights(tmp_path, capsys, scn_ckpt):
    code, err = run_cli(capsys, bsds_image_path(), "--method", "pcnet", "--weights", scn_ckpt, "--out", tmp_path / "o")
    assert code == 2 and "holds a 'scn' model, but 'pcnet' was asked for" in err
    assert not (tmp_path / "o").exists()


def test_corrupt_weights(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(np.random.default_rng(17).bytes(2000))  # seeded: torch's unpickler raises IndexError here
    code, err = run_cli(capsys, bsds_image_path(), "--weights", bad, "--out", tmp_path / "o")
    assert code == 2 and f"{bad}: not a readable checkpoint" in err
    assert not (tmp_path / "o").exists()


def test_output_folder_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    code, err = run_cli(capsys, bsds_image_path(), "-m", "slic", "--out", target)
    assert code == 2 and f"{target}: output path exists and is not a folder" in err
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("command", ["superpixels", "segment", "refine-classes", "evaluate", "train"])
def test_an_empty_output_folder_name_is_refused(command, tmp_path, capsys, monkeypatch):
    """``-o ""`` (an unset shell variable) wrote into the current folder before 2026-12-08."""
    monkeypatch.chdir(tmp_path)
    extra = {"superpixels": [str(bsds_image_path())], "segment": [str(bsds_image_path())],
             "refine-classes": [str(bsds_image_path()), "--classes", str(bsds_image_path())],
             "evaluate": [], "train": ["pcnet"]}[command]
    with pytest.raises(SystemExit) as stop:
        main([command, *extra, "-o", ""])
    assert stop.value.code == 2 and "an empty folder name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_output_folder_not_writable(tmp_path, capsys):
    """An existing folder the command cannot write into: a folder of mode 0o555, or as root (who may write into
    any such folder, as CI does) a folder of sysfs, which no process may create files in."""
    if os.geteuid() == 0:
        ro = Path("/sys/kernel")
        if not ro.is_dir():
            pytest.skip("as root only a read-only file system refuses a file, and /sys is not mounted here")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
    before = sorted(p.name for p in ro.iterdir())
    try:
        code, err = run_cli(capsys, bsds_image_path(), "-m", "slic", "--out", ro)
        assert code == 2 and f"{ro}: output folder is not writable" in err
        assert sorted(p.name for p in ro.iterdir()) == before
    finally:
        if ro.is_relative_to(tmp_path):
            ro.chmod(0o755)


def test_output_folder_cannot_be_created(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = run_cli(capsys, bsds_image_path(), "-m", "slic", "--out", tmp_path / "file" / "sub")
    assert code == 2 and "output folder is not writable" in err


def test_never_overwrites_an_input(tmp_path, capsys):
    first = tmp_path / "a.jpg"
    shutil.copy(bsds_image_path(), first)
    victim = tmp_path / "a_overlay.jpg"
    Image.open(first).save(victim)
    before = victim.read_bytes()
    code, err = run_cli(capsys, first, victim, "-n", 100, "-m", "slico", "--out", tmp_path)
    assert code == 2 and "would overwrite an input file" in err
    assert victim.read_bytes() == before
    assert not (tmp_path / "a_labels.png").exists()
    # an input named summary.json in the output folder: the batch's summary would replace it (it did, until
    # 2026-12-08); refused before any image is processed
    named = tmp_path / "summary.json"
    shutil.copy(bsds_image_path(), named)
    code, err = run_cli(capsys, named, "-n", 100, "-m", "slico", "--out", tmp_path)
    assert code == 2 and "summary.json would overwrite this input" in err
    assert named.read_bytes() == Path(bsds_image_path()).read_bytes()
    assert not (tmp_path / "summary_labels.png").exists()


def test_duplicate_stems_get_distinct_outputs(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    copy = tmp_path / "x" / "100007.jpg"
    shutil.copy(bsds_image_path(), copy)
    code, _ = run_cli(capsys, bsds_image_path(), copy, "-n", 100, "-m", "slico", "--out", tmp_path / "o")
    assert code == 0
    assert "100007-2_labels.png" in files_in(tmp_path / "o")


def test_console_script_help_documents_every_option(tmp_path):
    exe = shutil.which("uhrseg", path=os.path.dirname(sys.executable)) or shutil.which("uhrseg")
    assert exe, "console script 'uhrseg' is not installed"
    proc = subprocess.run([exe, "superpixels", "--help"], capture_output=True, text=True, check=True)
    for option in ("--n-segments", "--method", "--device", "--weights", "--out", "--label-format",
                   "--preview-side", "--strip-pixels", "--quiet", "IMAGE", "summary.json", "pcnet", "lsc"):
        assert option in proc.stdout
    bad = subprocess.run([exe, "superpixels", "/nonexistent.jpg", "-m", "slic", "-q", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "/nonexistent.jpg: file not found" in bad.stderr


def test_example_image_command(capsys):
    assert main(["example-image"]) == 0
    path = capsys.readouterr().out.strip()
    assert read_image(path).shape == (1600, 2560, 3)


def test_shared_names_match_the_registries():
    """uhrseg.defaults (read by the command line before torch loads) names exactly what the registries hold."""
    from uhrseg import defaults
    from uhrseg.classical import CLASSICAL_METHODS
    from uhrseg.grid.refine import DEFAULT_REFINE_ITERATIONS
    from uhrseg.inference import DEFAULT_STRIP_PIXELS, DEFAULT_TILE, METHODS
    from uhrseg.models import MODELS, SEGMENTERS

    assert defaults.NETWORK_METHODS == tuple(MODELS)
    assert defaults.CLASSICAL_METHOD_NAMES == tuple(CLASSICAL_METHODS)
    assert METHODS == defaults.METHODS
    assert defaults.SEMANTIC_MODELS == tuple(SEGMENTERS) + defaults.MAGNET_MODELS
    assert (DEFAULT_STRIP_PIXELS, DEFAULT_TILE, DEFAULT_REFINE_ITERATIONS) == (2**18, 512, 8)


def test_command_line_parses_without_loading_torch_or_numba():
    """What the start-up of every command pays before its first image starts decoding (and all that ``uhrseg
    COMMAND --help`` pays): no torch, no numba, and not even NumPy or the image libraries. ``train``'s parser
    prints the recipes' defaults, which live in the torch-free :mod:`uhrseg.training.config` (before: 2 s of
    torch for ``uhrseg train --help``); ``superpixels`` and ``segment`` imported NumPy, OpenCV, Pillow and
    tifffile with their parsers until 2026-12-07 (0.21-0.24 s for their ``--help``, 0.05-0.08 s since)."""
    code = "\n".join([
        "import sys, uhrseg",
        "from uhrseg.cli.main import COMMANDS, build_parser",
        "for command in COMMANDS:",
        "    build_parser(command)",
        "print(uhrseg.__version__, sorted(m for m in ('torch', 'numba', 'skimage', 'matplotlib', 'scipy', 'numpy', "
        "'cv2', 'PIL', 'tifffile') if m in sys.modules))",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{uhrseg.__version__} []"


@pytest.mark.parametrize("argv, out", [(["example-image"], "kite-2560x1600.jpg"), (["--version"], "uhrseg "),
                                       (["--help"], "example-image")])
def test_top_level_commands_import_no_command_module(argv, out):
    """`uhrseg --help`, `--version` and `example-image` (the README demo runs it first) build no sub-command's
    parser: none of the command modules, and so neither torch nor numba, is imported."""
    code = "\n".join([
        "import sys, contextlib, io",
        "from uhrseg.cli.main import main",
        "text = io.StringIO()",
        "with contextlib.redirect_stdout(text):",
        "    try:",
        f"        code = main({argv!r})",
        "    except SystemExit as e:",
        "        code = e.code",
        "print(code, repr(text.getvalue()))",
        "print(sorted(m for m in sys.modules if m.startswith('uhrseg.cli.') and m != 'uhrseg.cli.main'"
        " or m in ('torch', 'numba', 'scipy', 'matplotlib')))",
    ])
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[0].startswith("0 ") and out in lines[0], lines
    assert lines[1] == "[]", lines


def test_numba_loads_in_the_warm_up_thread():
    """numba's import and start-up (0.5 s) belong to the predictor's background warm-up, not to its import or
    construction on the thread that goes on to decode and resize the image."""
    code = "\n".join([
        "import sys, threading",
        "import uhrseg.inference.predictor as p",
        "print('numba' in sys.modules)",
        "predictor = p.SuperpixelPredictor('pcnet', backend='opencv')",
        "predictor._warm_up.join()",
        "print('numba' in sys.modules, 'numba.np.arraymath' in sys.modules, 'scipy' in sys.modules)",
        "import scipy.linalg.cython_blas",  # hidden from the warm-up thread only, and only while it imported numba
        "print(len(sys.meta_path) == n_finders)",
    ])
    code = code.replace("import sys, threading", "import sys, threading\nn_finders = len(sys.meta_path)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # numba's NumPy support is loaded without the 0.16 s SciPy import it would make (uhrseg.grid.warmup)
    assert out.split() == ["False", "True", "True", "False", "True"]


def test_scipy_is_refused_to_the_warm_up_thread_only():
    """The finder that keeps SciPy out of numba's import refuses it to the thread that made it, not to others
    (a concurrent import elsewhere must not fail), and finds nothing else."""
    import threading

    from uhrseg.grid.warmup import _NoScipyInThread

    finder = _NoScipyInThread()
    with pytest.raises(ModuleNotFoundError, match="scipy.linalg.cython_blas"):
        finder.find_spec("scipy.linalg.cython_blas")
    with pytest.raises(ModuleNotFoundError):
        finder.find_spec("scipy")
    assert finder.find_spec("scipyx") is None and finder.find_spec("numpy") is None
    seen = []
    other = threading.Thread(target=lambda: seen.append(finder.find_spec("scipy.linalg")))
    other.start()
    other.join()
    assert seen == [None]


def test_refinement_settings_are_recorded_and_checked(tmp_path, capsys):
    code, err = run_cli(capsys, bsds_image_path(), "--n-segments", "300", "--refine-smoothness", "100",
                        "--refine-compactness", "5", "--out", tmp_path / "out")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["refine_compactness"], summary["refine_smoothness"]) == (5.0, 100.0)
    assert summary["images"][0]["refine_smoothness"] == 100.0  # as given, whatever the upsampling
    # nan was accepted (every comparison with it is false) and inf too
    for flag, value in (("--refine-smoothness", "-1"), ("--refine-compactness", "nan"), ("--refine-smoothness", "nan"),
                        ("--refine-compactness", "inf")):
        code, err = run_cli(capsys, bsds_image_path(), flag, value, "--out", tmp_path / "bad")
        assert code == 2 and "--refine-smoothness and --refine-compactness must be finite and >= 0" in err, err
        assert files_in(tmp_path / "bad") == []
    for bad in (("--oversegmentation", "0.5"), ("--oversegmentation", "inf"),  # inf was an OverflowError traceback
                ("--oversegmentation", "2", "-m", "slic")):
        code, err = run_cli(capsys, bsds_image_path(), *bad, "--out", tmp_path / "bad")
        assert code == 2 and "--oversegmentation is for pcnet and scn and must be finite and >= 1" in err, err
        assert not (tmp_path / "bad").exists() or files_in(tmp_path / "bad") == []
    for flag in ("--tile", "--strip-pixels"):  # --strip-pixels 0 named the predictor's strip_pixels before
        code, err = run_cli(capsys, bsds_image_path(), flag, "0", "--out", tmp_path / "bad")
        assert code == 2 and f"{flag} must be >= 1, got 0" in err, err
        assert not (tmp_path / "bad").exists()


def test_precision_flag_runs_torch_and_is_recorded(tmp_path, capsys):
    """--precision bf16 takes the torch backend under auto and is recorded; a classical method or the OpenCV
    backend refuses it before any folder is made."""
    code, err = run_cli(capsys, bsds_image_path(), "-n", "300", "--device", "cpu", "--precision", "bf16",
                        "--out", tmp_path / "out")
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["backend"], summary["precision"]) == ("torch", "bf16")
    assert summary["images"][0]["n_produced"] > 250
    for bad, message in ((("-m", "slic"), "--precision fp16 is for pcnet and scn, not --method slic"),
                         (("--backend", "opencv"), "--precision fp16 needs the torch backend")):
        code, err = run_cli(capsys, bsds_image_path(), "--precision", "fp16", *bad, "--out", tmp_path / "bad")
        assert code == 2 and message in err, err
        assert not (tmp_path / "bad").exists()
    code, err = run_cli(capsys, bsds_image_path(), "-n", "300", "-m", "slic", "--out", tmp_path / "slic")
    assert code == 0, err
    assert json.loads((tmp_path / "slic" / "summary.json").read_text())["precision"] is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["c.png", "c.jpg", "c-2.png", "c-2-2.tif", "sub/c.png", "d.png", "c-3.png"]),
                max_size=8))
def test_output_stems_are_unique_and_keep_the_first_own_stem(names):
    from uhrseg.cli.common import output_stems

    paths = [Path(n) for n in names]
    stems = output_stems(paths)
    assert len(set(stems)) == len(stems)
    for i, (path, stem) in enumerate(zip(paths, stems)):
        assert stem.startswith(path.stem)
        if path.stem not in stems[:i]:
            assert stem == path.stem or path.stem in [p.stem for p in paths[:i]]


def test_inputs_whose_names_collide_write_separate_outputs(tmp_path, capsys):
    """``c.png c.jpg c-2.png``: the second input was named c-2 like the third, whose outputs then replaced its own
    (exit 0, both summary entries pointing at the same files)."""
    image = read_image(bsds_image_path())
    for name, rows in (("c.png", 100), ("c.jpg", 110), ("c-2.png", 120)):  # three sizes, to tell them apart
        Image.fromarray(image[:rows, :128]).save(tmp_path / name)
    code, err = run_cli(capsys, *(tmp_path / n for n in ("c.png", "c.jpg", "c-2.png")), "-m", "slic", "-n", "20",
                        "--overlay", "none", "--out", tmp_path / "out")
    assert code == 0, err
    assert files_in(tmp_path / "out") == ["c-2-2_labels.png", "c-2_labels.png", "c_labels.png", "summary.json"]
    entries = json.loads((tmp_path / "out" / "summary.json").read_text())["images"]
    for entry, stem, rows in zip(entries, ("c", "c-2", "c-2-2"), (100, 110, 120)):
        assert entry["height"] == rows and Path(entry["outputs"][0]).name == f"{stem}_labels.png"
        assert Image.open(tmp_path / "out" / f"{stem}_labels.png").size == (128, rows)


def test_ray_workers_without_ray_is_refused(tmp_path, capsys):
    """--ray-workers without --ray was silently ignored."""
    code, err = run_cli(capsys, bsds_image_path(), "-m", "slic", "--ray-workers", "2", "--out", tmp_path / "o")
    assert code == 2 and "--ray-workers applies only with --ray" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_memory_goes_back_to_the_system_between_streamed_stages():
    """With the commands' allocator settings a freed 400 MB map stays resident; release_free_memory (called between
    the streamed pipelines' stages) hands it back. In a subprocess: the settings are process-wide."""
    code = """if True:
        import numpy as np
        from uhrseg.memory import release_free_memory, tune_allocator
        def rss():
            return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) // 1024
        assert tune_allocator()
        before = rss()
        block = np.ones(400 * 2**20, np.uint8)
        del block
        kept = rss()
        assert release_free_memory()
        print(before, kept, rss())
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, kept, after = map(int, out.split())
    assert kept - before > 350, "the allocator settings keep freed blocks (the reason for the trim)"
    assert after - before < 50


@pytest.mark.parametrize("model, adamw_decay", [("magnet", 1e-4), ("isdnet", 1e-4)])
def test_train_sgd_takes_the_papers_weight_decay(model, adamw_decay, tmp_path):
    """``--optimizer sgd`` without ``--weight-decay`` gives 5e-4 (ISDNet's and MagNet's SGD recipes), adamw its
    own default, and an explicit value wins (MagNet's SGD kept adamw's 1e-4 until 2026-12-08)."""
    from uhrseg.cli.main import build_parser
    from uhrseg.cli.train import _magnet_config, _segmentation_config

    config_of = _magnet_config if model == "magnet" else _segmentation_config
    base = ["train", model, "--out", str(tmp_path), "--data", "../shared/datasets/semantic-drone/train"]
    base += ["--backbone", "drone"] if model == "magnet" else []

    def decay(*extra: str) -> float:
        return config_of(build_parser("train").parse_args(base + list(extra))).weight_decay

    assert decay("--optimizer", "sgd") == 5e-4
    assert decay() == adamw_decay
    assert decay("--optimizer", "sgd", "--weight-decay", "1e-5") == 1e-5


@pytest.mark.parametrize("sig, code, said", [("SIGTERM", 143, "uhrseg: terminated"),
                                             ("SIGINT", 130, "uhrseg: interrupted")])
def test_a_stopped_command_leaves_no_scratch_files(tmp_path, sig, code, said):
    """SIGTERM (``kill``, ``timeout``, batch schedulers) unwinds like Ctrl-C: a streamed image's work folder
    (label, CIELAB and guide scratch files, about 7 bytes per pixel) and unrenamed outputs are removed. Before
    2026-12-08 SIGTERM ended the process where it stood and left them."""
    import signal
    import time

    exe = shutil.which("uhrseg", path=os.path.dirname(sys.executable)) or shutil.which("uhrseg")
    photo = PHOTOS / "volna-5120x2880.jpg"
    out = tmp_path / "out"
    proc = subprocess.Popen([exe, "superpixels", str(photo), "-n", "3000", "--stream", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(out.glob(".uhrseg-work-*/*")):  # stopped while the scratch files exist
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its work folder filled"
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and said in err, (proc.returncode, err[-500:])
    assert not out.exists() or [p.name for p in out.iterdir()] == [], list(out.iterdir())
