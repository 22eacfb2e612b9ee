"""Full-resolution boundary refinement: real BSDS500 gains, topology guarantees (property-based), validation."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from uhrseg.datasets import BSDS500
from uhrseg.grid import enforce_connectivity, refine_boundaries
from uhrseg.metrics.superpixel import achievable_segmentation_accuracy, boundary_recall_precision

FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def n_components(labels: np.ndarray) -> list[int]:
    """4-connected pieces of every label."""
    return [ndimage.label(labels == k, structure=FOUR)[1] for k in range(int(labels.max()) + 1)]


def blocky_grid(shape: tuple[int, int], cell: int, factor: int) -> np.ndarray:
    """A grid of cells decided on a map `factor` times coarser and upsampled (nearest): staircase boundaries."""
    h, w = shape
    ys = (np.arange(h) // factor * factor)[:, None]
    xs = (np.arange(w) // factor * factor)[None, :]
    jitter = ((ys * 7 + xs * 13) // factor) % 3 - 1  # coarse wiggle, like a low-resolution decision
    rows = np.clip((ys + jitter * factor) // cell, 0, None)
    cols = np.clip((xs + jitter * factor) // cell, 0, None)
    return enforce_connectivity((rows * 1000 + cols).astype(np.int32), 0, None)


def test_refinement_puts_boundaries_on_the_edges_of_a_real_image(mini_bsds):
    ds = BSDS500(mini_bsds, "test")
    gains = []
    for name in ds.names:
        image = ds.image(name)
        base = blocky_grid(image.shape[:2], 20, 4)
        refined = refine_boundaries(image, base, iterations=4)
        assert refined.dtype == np.int32 and refined.shape == base.shape
        assert int(refined.max()) + 1 == int(base.max()) + 1  # K unchanged
        assert n_components(refined) == [1] * (int(base.max()) + 1)  # every superpixel 4-connected
        for gt in ds.ground_truths(name):
            br0, bp0 = boundary_recall_precision(base, gt, tolerance=1)
            br1, bp1 = boundary_recall_precision(refined, gt, tolerance=1)
            gains.append((br1 - br0, bp1 - bp0, achievable_segmentation_accuracy(refined, gt)
                          - achievable_segmentation_accuracy(base, gt)))
    br_gain, bp_gain, asa_gain = np.mean(gains, axis=0)
    assert br_gain > 0.1 and bp_gain > 0.0 and asa_gain > 0.005, (br_gain, bp_gain, asa_gain)


def test_zero_iterations_and_input_untouched(bsds_image):
    base = blocky_grid(bsds_image.shape[:2], 24, 4)
    before = base.copy()
    np.testing.assert_array_equal(refine_boundaries(bsds_image, base, iterations=0), base)
    out = refine_boundaries(bsds_image, base, iterations=3)
    np.testing.assert_array_equal(base, before)
    assert (out != base).any()


def test_float_and_uint16_images_give_the_uint8_result(bsds_image):
    base = blocky_grid(bsds_image.shape[:2], 24, 4)
    ref = refine_boundaries(bsds_image, base)
    np.testing.assert_array_equal(refine_boundaries(bsds_image.astype(np.uint16) * 257, base), ref)
    np.testing.assert_array_equal(refine_boundaries(bsds_image / np.float32(255), base), ref)


@pytest.mark.parametrize("kwargs, match", [
    (dict(iterations=-1), ">= 0"), (dict(compactness=-1.0), ">= 0"), (dict(smoothness=-2.0), ">= 0"),
    (dict(compactness=float("nan")), "finite and >= 0"), (dict(smoothness=float("inf")), "finite and >= 0"),
])
def test_bad_parameters(bsds_image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        refine_boundaries(bsds_image, np.zeros(bsds_image.shape[:2], np.int32), **kwargs)


def test_bad_shapes_and_labels(bsds_image):
    with pytest.raises(ValueError, match="same size"):
        refine_boundaries(bsds_image, np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError, match=">= 0"):
        refine_boundaries(bsds_image, np.full(bsds_image.shape[:2], -1, np.int32))


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(2, 24), w=st.integers(2, 24), seed=st.integers(0, 2**31 - 1),
    n_seeds=st.integers(1, 12), iterations=st.integers(1, 6), smoothness=st.sampled_from([0.0, 50.0, 200.0]),
)
def test_topology_is_preserved(h, w, seed, n_seeds, iterations, smoothness):
    """Any connected partition stays a partition into the same K non-empty 4-connected superpixels."""
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(max(1, h // 3), max(1, w // 3)))
    raw = np.kron(seeds, np.ones((3, 3), np.int32))[:h, :w]
    raw = np.pad(raw, ((0, h - raw.shape[0]), (0, w - raw.shape[1])), mode="edge")
    labels = enforce_connectivity(raw.astype(np.int32), 0, None)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    out = refine_boundaries(image, labels, iterations=iterations, compactness=1.0, smoothness=smoothness)
    k = int(labels.max()) + 1
    assert int(out.max()) + 1 == k and out.min() == 0
    assert n_components(out) == [1] * k


def reference_refinement(lab: np.ndarray, labels: np.ndarray, iterations: int, compactness: float,
                         smoothness: float) -> np.ndarray:
    """The refinement as its docstring states it, in plain Python: every pixel is visited in raster order
    (forward, then backward, alternating) and tested at its turn for a 4-neighbour in another superpixel."""
    from uhrseg.grid.refine import _CAN_LEAVE, _RING_DX, _RING_DY

    labels = labels.astype(np.int32).copy()
    h, w = labels.shape
    k = int(labels.max()) + 1
    acc = np.zeros((k, 6))
    for y in range(h):
        for x in range(w):
            acc[labels[y, x]] += (*lab[y, x].astype(float), y, x, 1.0)
    weight = (compactness / np.sqrt(h * w / k)) ** 2
    for it in range(iterations):
        order = [(y, x) for y in range(h) for x in range(w)]
        moved = 0
        for y, x in reversed(order) if it % 2 else order:
            own = labels[y, x]
            four = [labels[y + dy, x + dx] for dy, dx in ((-1, 0), (0, -1), (0, 1), (1, 0))
                    if 0 <= y + dy < h and 0 <= x + dx < w]
            if all(v == own for v in four) or acc[own, 5] <= 1.0:
                continue
            ring = [labels[y + dy, x + dx] if 0 <= y + dy < h and 0 <= x + dx < w else -1
                    for dy, dx in zip(_RING_DY, _RING_DX)]
            candidates = list(dict.fromkeys(v for v in four if v != own)) + [own]
            best, best_d = own, np.inf
            for c in candidates:
                mean = acc[c, :5] / acc[c, 5]
                d = float(np.sum((lab[y, x] - mean[:3]) ** 2) + weight * ((y - mean[3]) ** 2 + (x - mean[4]) ** 2))
                d += smoothness * sum(1 for v in ring if v >= 0 and v != c)
                if d < best_d or (d == best_d and c == own):
                    best, best_d = c, d
            inside = sum(1 << j for j, v in enumerate(ring) if v == own)
            if best != own and _CAN_LEAVE[inside]:
                labels[y, x] = best
                row = np.array([*lab[y, x].astype(float), y, x, 1.0])
                acc[own] -= row
                acc[best] += row
                moved += 1
        if moved == 0:
            break
    return labels


def random_partition(rng, h: int, w: int, n_seeds: int) -> np.ndarray:
    """4-connected superpixels from random 2 x 2 blocks of ``n_seeds`` values."""
    raw = np.kron(rng.integers(0, n_seeds, size=(h // 2 + 1, w // 2 + 1)), np.ones((2, 2), np.int32))[:h, :w]
    return enforce_connectivity(raw.astype(np.int32), 0, None)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 20), w=st.integers(1, 20), seed=st.integers(0, 2**31 - 1), n_seeds=st.integers(2, 10),
    iterations=st.integers(1, 4), smoothness=st.sampled_from([0.0, 60.0]), compactness=st.sampled_from([0.0, 4.0]),
    two_chunks=st.booleans(),
)
def test_kernel_matches_the_plain_refinement(h, w, seed, n_seeds, iterations, smoothness, compactness, two_chunks):
    """The kernel visits only the pixels it marks as boundary pixels row by row (and the next pixel of a sweep
    after a move); the labels must be those of visiting every pixel, on any map, image and settings, also when
    the image is two chunks of a pass (each phase then has one chunk: the order of one sweep)."""
    from uhrseg.grid import refine
    from uhrseg.grid.colour import lab8

    rng = np.random.default_rng(seed)
    labels = random_partition(rng, h, w, n_seeds)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    chunk_rows = refine.REFINE_CHUNK_ROWS
    try:
        refine.REFINE_CHUNK_ROWS = -(-h // 2) if two_chunks else chunk_rows
        out = refine_boundaries(image, labels, iterations=iterations, compactness=compactness, smoothness=smoothness)
    finally:
        refine.REFINE_CHUNK_ROWS = chunk_rows
    want = reference_refinement(lab8(image).astype(np.float64), labels, iterations, compactness, smoothness)
    np.testing.assert_array_equal(out, want)


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(9, 40), w=st.integers(2, 24), seed=st.integers(0, 2**31 - 1), n_seeds=st.integers(2, 10),
    chunk_rows=st.integers(2, 6), band_rows=st.integers(1, 12), iterations=st.integers(1, 4),
)
def test_chunked_passes_do_not_depend_on_threads_or_stores(tmp_path_factory, h, w, seed, n_seeds, chunk_rows,
                                                          band_rows, iterations):
    """Many chunks per phase: the labels are the same with 1, 2 or 3 threads, any band_rows, in memory or in
    files on disk, and still a partition into the same 4-connected superpixels."""
    from uhrseg.grid import refine
    from uhrseg.grid.colour import lab8
    from uhrseg.stores import ArrayStore, FileStore

    rng = np.random.default_rng(seed)
    labels = random_partition(rng, h, w, n_seeds)
    lab = lab8(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    k = int(labels.max()) + 1
    default_rows = refine.REFINE_CHUNK_ROWS
    results = []
    try:
        refine.REFINE_CHUNK_ROWS = chunk_rows
        for threads in (1, 2, 3):
            out = labels.copy()
            refine.refine_store(ArrayStore(lab), ArrayStore(out), k, iterations, 2.0, 50.0, threads=threads)
            results.append(out)
        folder = tmp_path_factory.mktemp("stores")
        lab_file = FileStore(folder / "lab", lab.shape, np.uint8)
        label_file = FileStore(folder / "labels", labels.shape, np.int32)
        try:
            lab_file.write(0, lab)
            label_file.write(0, labels)
            refine.refine_store(lab_file, label_file, k, iterations, 2.0, 50.0, band_rows=band_rows, threads=2)
            results.append(label_file.read(0, h))
        finally:
            lab_file.close()
            label_file.close()
    finally:
        refine.REFINE_CHUNK_ROWS = default_rows
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    assert n_components(results[0]) == [1] * k


def test_t4_table_is_the_simple_point_test_for_every_neighbourhood():
    """The kernel's T4 table against a direct count: for each of the 256 ways a pixel's 8 neighbours can lie
    in its own superpixel, it may leave exactly when those neighbours form one 4-connected piece that touches a
    4-neighbour (so removing the pixel cannot split the superpixel locally)."""
    from uhrseg.grid.refine import _CAN_LEAVE, _RING_DX, _RING_DY

    for mask in range(256):
        patch = np.zeros((3, 3), bool)
        for j in range(8):
            patch[1 + _RING_DY[j], 1 + _RING_DX[j]] = (mask >> j) & 1
        pieces = ndimage.label(patch, structure=FOUR)[0]
        touching = {pieces[1 + dy, 1 + dx] for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))} - {0}
        assert bool(_CAN_LEAVE[mask]) == (len(touching) == 1), mask


_WARM_UP_CHECK = """
import sys
from uhrseg import SuperpixelPredictor
from uhrseg.grid import connectivity, refine
from uhrseg.grid.warmup import warm_up_kernels
from uhrseg.io import read_image
kernels = (refine._add_sums, refine._refine_rows, connectivity._enforce_connectivity_kernel)
assert not any(k.signatures for k in kernels)
warm_up_kernels()
before = [sorted(map(str, k.signatures)) for k in kernels]
assert all(before), before
labels = SuperpixelPredictor("pcnet", device="cpu", backend="torch").predict(read_image(sys.argv[1]), 300)
assert labels.max() > 100
after = [sorted(map(str, k.signatures)) for k in kernels]
print("same" if after == before else f"pipeline added {after} to {before}")
"""


def test_warm_up_loads_the_kernels_the_pipeline_calls():
    """The warm-up thread is only useful if it loads the very specialisations the pipeline calls: in a fresh
    process, after it, a real image through the network pipeline adds no kernel signature (nothing compiled
    or loaded late)."""

    from conftest import bsds_image_path

    out = subprocess.run([sys.executable, "-c", _WARM_UP_CHECK, str(bsds_image_path())], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "same"


_WARM_UP_ORDER = """
import sys
from numba.core import event
from uhrseg.grid.warmup import start_warm_up
from uhrseg.grid import connectivity, refine

order = []

class Record(event.Listener):
    depth = 0

    def on_start(self, ev):
        if self.depth == 0:
            order.append(ev.data["dispatcher"].py_func.__name__)
        self.depth += 1

    def on_end(self, ev):
        self.depth -= 1

event.register("numba:compile", Record())
warm_up = start_warm_up(refinement=sys.argv[1] == "1", child=sys.argv[2] == "1")
warm_up.join()
kernels = (refine._add_sums, refine._refine_rows, connectivity._enforce_connectivity_kernel)
print(" ".join(order), "|", " ".join(str(bool(k.signatures)) for k in kernels), "|", warm_up.compiled_in_child)
"""


def _warm_up_order(refinement: str, child: str, cache) -> str:

    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-c", _WARM_UP_ORDER, refinement, child], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()


def test_warm_up_compiles_the_refinement_first_and_only_what_is_needed(tmp_path):
    """With an empty cache (a first run after an install) and no child process, the warm-up compiles the
    refinement's kernels before the connectivity kernel, which the pipeline's join then waits for last; without
    the refinement (refine_iterations=0) it compiles only the connectivity kernel."""
    assert (_warm_up_order("1", "0", tmp_path / "a")
            == "_add_sums _refine_rows _enforce_connectivity_kernel | True True True | False")
    assert _warm_up_order("0", "0", tmp_path / "b") == "_enforce_connectivity_kernel | False False True | False"
    assert _warm_up_order("0", "1", tmp_path / "c") == "_enforce_connectivity_kernel | False False True | False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sweep is compiled in a child on Linux only")
def test_warm_up_compiles_the_sweep_in_a_child_on_a_cache_miss_only(tmp_path):
    """On Linux with an empty cache, a forked child compiles the refinement's sweep into numba's cache while the
    warm-up thread compiles the other two kernels; the thread then loads the sweep from the cache (no compile
    event of its own) and the cache holds it. With the cache filled, nothing is forked or compiled."""
    assert (_warm_up_order("1", "1", tmp_path)
            == "_add_sums _enforce_connectivity_kernel | True True True | True")
    assert any(p.name.startswith("refine._refine_rows-") and p.suffix == ".nbi" for p in tmp_path.rglob("*"))
    assert _warm_up_order("1", "1", tmp_path) == "| True True True | False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sweep is compiled in a child on Linux only")
def test_wait_for_child_reports_the_status_kills_a_hung_child_and_never_raises():
    """The warm-up's wait for its compiling child: True for exit status 0, False for another status, a child
    still running at the timeout is killed and reaped (False), and a child already reaped elsewhere
    gives False instead of an error."""
    from uhrseg.grid.warmup import wait_for_child

    assert wait_for_child(subprocess.Popen([sys.executable, "-c", "pass"]).pid) is True
    assert wait_for_child(subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]).pid) is False
    hung = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert wait_for_child(hung.pid, timeout=0.3) is False  # True only if it waited the minute out (status 0)
    with pytest.raises(ChildProcessError):  # killed and reaped: no zombie left
        os.waitpid(hung.pid, os.WNOHANG)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert wait_for_child(gone.pid) is False


_NICE = """
import os, sys, threading
from numba.core import event
from uhrseg.grid.warmup import CHILD_NICE, warm_up_kernels

def nice():
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

compiled = []  # (kernel, nice of the thread that compiled it, compiled by the warm-up's own thread)

class Record(event.Listener):
    def on_start(self, ev):
        compiled.append((ev.data["dispatcher"].py_func.__name__, nice(), threading.current_thread() is caller))

    def on_end(self, ev):
        pass

event.register("numba:compile", Record())
seen = []

def run(lower):
    forked = warm_up_kernels(child=True, lower_priority=lower)
    seen.append((forked, nice()))

for lower in (True, False):  # an empty cache: a child; then a cache hit: none
    caller = threading.Thread(target=run, args=(lower,))
    caller.start()
    caller.join()
print(CHILD_NICE, seen, sorted(set(compiled)), nice())
"""


def _priority_can_be_lowered() -> bool:
    """Whether a thread here may raise its own nice value by 5 (some sandboxes refuse setpriority)."""
    import threading

    result = []

    def probe():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, before + 5)
        except OSError:
            pass
        result.append(os.getpriority(os.PRIO_PROCESS, tid) == before + 5)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return result[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sweep is compiled in a child on Linux only")
def test_the_kernels_beside_the_compiling_child_are_compiled_at_a_lower_priority(tmp_path):
    """With lower_priority (as WarmUp's thread calls it) and a child compiling the sweep, the other two kernels are
    compiled CHILD_NICE nice levels lower, in a thread other than the caller's, while the caller's own priority and
    the main thread's stay as they were; without a child (a cache hit) nothing is compiled or lowered."""
    base = os.getpriority(os.PRIO_PROCESS, 0)  # the test process's (the subprocess inherits it)
    if base > 14 or not _priority_can_be_lowered():
        pytest.skip("this process cannot lower a thread's priority by 5 nice levels")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _NICE], capture_output=True, text=True, check=True,
                         env=env).stdout.strip()
    lowered = base + 5
    assert out == (f"5 [(True, {base}), (False, {base})] [('_add_sums', {lowered}, False), "
                   f"('_enforce_connectivity_kernel', {lowered}, False)] {base}")


_CHILD_LABELS = """
import hashlib, sys
import numpy as np
from uhrseg.grid.refine import refine_boundaries
from uhrseg.grid.warmup import start_warm_up
from uhrseg.io import read_image
from skimage.segmentation import slic
warm_up = start_warm_up(child=sys.argv[2] == "1")
warm_up.join()
image = read_image(sys.argv[1])
labels = slic(image, n_segments=300, start_label=0).astype(np.int32)
refined = refine_boundaries(image, labels)
print(warm_up.compiled_in_child, int((refined != labels).sum()), hashlib.sha256(refined.tobytes()).hexdigest())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sweep is compiled in a child on Linux only")
def test_the_sweep_compiled_in_a_child_refines_as_the_one_compiled_in_process(tmp_path):
    """A real BSDS500 image's SLIC superpixels refined with the sweep that a child compiled (and the process
    loaded from the cache) equal those refined with the sweep compiled in the process itself, and the
    refinement moved pixels."""

    from conftest import bsds_image_path

    outs = []
    for child in ("1", "0"):
        env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / child)}
        outs.append(subprocess.run([sys.executable, "-c", _CHILD_LABELS, str(bsds_image_path()), child],
                                   capture_output=True, text=True, check=True, env=env).stdout.split())
    assert outs[0][0] == "True" and outs[1][0] == "False"
    assert int(outs[0][1]) > 1000  # pixels moved by the refinement
    assert outs[0][1:] == outs[1][1:]


def test_opencv_runs_one_thread_fewer_while_numba_compiles():
    """While numba compiles inside opencv_yields_to_compiler, OpenCV's thread count is one lower, for the
    outermost compilation only, and is put back afterwards; two blocks open at once lower it once, not twice;
    a count that something else set meanwhile is left as it is; one thread is left alone."""
    import cv2
    import numba
    from numba.core import event

    from uhrseg.grid.compile_priority import OpenCVYieldsToCompiler, opencv_yields_to_compiler

    seen = []

    class Probe(event.Listener):  # registered after the listener under test: sees the counts it set
        def on_start(self, ev):
            seen.append(("start", cv2.getNumThreads()))

        def on_end(self, ev):
            seen.append(("end", cv2.getNumThreads()))

    def fresh():  # a new function each time, so that it compiles
        @numba.njit(cache=False)
        def inner(x):  # pragma: no cover - compiled
            return x + 1

        @numba.njit(cache=False)
        def outer(x):  # pragma: no cover - compiled; compiling it compiles inner: nested events
            return inner(x) * 2

        return outer

    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(3)
        with opencv_yields_to_compiler(), opencv_yields_to_compiler():  # e.g. two predictors' warm-ups at once
            with event.install_listener("numba:compile", Probe()):
                outer = fresh()
                assert outer(1) == 4
                outer(2)  # compiled already: no event
        assert seen == [("start", 2), ("start", 2), ("end", 2), ("end", 3)]
        assert cv2.getNumThreads() == 3

        class Changer(event.Listener):  # someone else sets a count during the compilation
            def on_start(self, ev):
                cv2.setNumThreads(5)

            def on_end(self, ev):
                pass

        with opencv_yields_to_compiler(), event.install_listener("numba:compile", Changer()):
            assert fresh()(1) == 4
        assert cv2.getNumThreads() == 5  # not put back to 3 over the other setting

        seen.clear()
        cv2.setNumThreads(1)
        with opencv_yields_to_compiler(), event.install_listener("numba:compile", Probe()):
            assert fresh()(1) == 4
        assert seen[0] == ("start", 1) and seen[-1] == ("end", 1)  # one thread already: left alone

        listener = OpenCVYieldsToCompiler()  # registered while a compilation runs: an end without its start
        listener.on_end(None)
        assert listener.depth == 0
    finally:
        cv2.setNumThreads(before)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.01, 1.0), st.floats(1.0, 1000.0), st.floats(1.0, 100.0), st.floats(0.0, 1000.0))
def test_resolution_smoothness_is_the_cube_root_law(below, f, ratio, smoothness):
    """lambda is unchanged up to f = 1, then falls as f ** -1/3: never rises with f, halves when f grows 8x."""
    from uhrseg.defaults import resolution_smoothness

    assert resolution_smoothness(below, smoothness) == smoothness
    assert resolution_smoothness(f * ratio, smoothness) <= resolution_smoothness(f, smoothness) * (1 + 1e-12)
    assert resolution_smoothness(8.0 * f, smoothness) == pytest.approx(resolution_smoothness(f, smoothness) / 2.0)
    assert resolution_smoothness(f) == pytest.approx(150.0 * f ** (-1.0 / 3.0))


@pytest.mark.parametrize("upsampling, smoothness", [(0.0, 150.0), (-1.0, 150.0), (float("nan"), 150.0), (2.0, -1.0)])
def test_resolution_smoothness_bad_input(upsampling, smoothness):
    from uhrseg.defaults import resolution_smoothness

    with pytest.raises(ValueError, match="upsampling must be > 0 and smoothness >= 0"):
        resolution_smoothness(upsampling, smoothness)
