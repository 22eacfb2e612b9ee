"""Full-resolution boundary refinement of a superpixel label map.

A network's label map is decided on its output grid: PCNet sees the image at 1/4 resolution, and on large
images the map is upsampled to the image (about 3x for n = 5000 on a 5K photo), so its boundaries are
staircases a few pixels off the true edges. This pass moves every boundary onto the right full-resolution
pixel with the image itself.

Method (a SLIC update restricted to the boundaries; Achanta et al., TPAMI 2012, Eq. 1-3): each superpixel
keeps its mean colour ``c_k`` (CIELAB as OpenCV's 8-bit encoding: ``L * 255 / 100``, ``a + 128``,
``b + 128``) and mean position ``p_k``. A pass visits the pixels that touch another superpixel (4-neighbours)
and gives each the label, among its own and its 4-neighbours', that minimises

    ``D = ||c(p) - c_k||^2 + (m / S)^2 ||p - p_k||^2 + lambda n_k(p)``,   ``S = sqrt(H W / K)``,

where ``n_k(p)`` counts the 8-neighbours of ``p`` not in superpixel ``k``: the smoothness prior of SEEDS and
ETPS (Yao et al., CVPR 2015), which keeps boundaries from fraying in texture (fewer boundary pixels, higher
boundary precision).

with the means updated as pixels move (SEEDS-style boundary updates; Van den Bergh et al., IJCV 2015). A pixel
leaves its superpixel only if that cannot split it (its superpixel's pixels among its 8 neighbours form one
4-connected run, T4 = 1) and never when it is the last one, so 4-connected input superpixels stay
4-connected and ``K`` does not change. Passes alternate between forward and backward raster order so that no
direction is favoured; pixels away from the boundaries are never touched. :func:`refine_store` runs a pass in
chunks of :data:`REFINE_CHUNK_ROWS` rows, every other chunk in parallel threads (its docstring says what that
changes on images taller than two chunks).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import math
import numba
import numpy as np

from ..defaults import DEFAULT_COMPACTNESS, DEFAULT_REFINE_ITERATIONS, DEFAULT_SMOOTHNESS
from ..stores import ArrayStore
from ..threads import usable_cpus
from .colour import lab8

__all__ = ["DEFAULT_COMPACTNESS", "DEFAULT_REFINE_ITERATIONS", "DEFAULT_SMOOTHNESS", "REFINE_CHUNK_ROWS", "lab8",
           "refine_boundaries", "refine_store"]

# Passes, m and lambda used by the network methods unless told otherwise: DEFAULT_REFINE_ITERATIONS,
# DEFAULT_COMPACTNESS and DEFAULT_SMOOTHNESS, defined (with how they were chosen) in uhrseg.defaults.


# The 8 neighbours of a pixel in ring order; consecutive entries are 4-adjacent to each other.
_RING_DY = np.array([-1, -1, -1, 0, 1, 1, 1, 0], dtype=np.int64)
_RING_DX = np.array([-1, 0, 1, 1, 1, 0, -1, -1], dtype=np.int64)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _add_sums(lab, labels, acc, y_offset):  # pragma: no cover - compiled
    """Add each superpixel's Lab, y, x and pixel count sums over a band starting at image row y_offset.
    All terms are integers, so the float64 sums are exact and do not depend on how the image is banded."""
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            k = labels[y, x]
            acc[k, 0] += lab[y, x, 0]
            acc[k, 1] += lab[y, x, 1]
            acc[k, 2] += lab[y, x, 2]
            acc[k, 3] += y + y_offset
            acc[k, 4] += x
            acc[k, 5] += 1.0


def _t4_is_one(inside: int) -> bool:
    """True if relabelling a pixel keeps its superpixel 4-connected, given ``inside``, the 8-bit mask of its 8
    neighbours (ring order, bit i for ring entry i) that are in its superpixel: those pixels form exactly one
    run around the ring that touches a 4-neighbour (T4 = 1; the odd ring entries are the 4-neighbours)."""
    if inside == 255:
        return True  # only when the ring is all the own superpixel (cannot happen on a boundary pixel)
    runs = 0
    for i in range(8):
        if (inside >> i) & 1 and not (inside >> ((i + 7) % 8)) & 1:  # a run starts here
            touches = False
            j = i
            while (inside >> (j % 8)) & 1 and j < i + 8:
                touches = touches or j % 2 == 1
                j += 1
            runs += touches
    return runs == 1


# T4 = 1 for each of the 256 masks, looked up by the kernel (a table costs less compilation than the test).
_CAN_LEAVE = np.array([_t4_is_one(m) for m in range(256)], dtype=np.bool_)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _refine_rows(lab, labels, acc, means, spatial_weight, smoothness, reverse, row_start, row_stop, y_offset,
                 ring_dy, ring_dx, candidates, ring, pixel, can_leave, on_boundary):  # pragma: no cover - compiled
    """One refinement sweep over rows [row_start, row_stop) of a band (window rows outside that range are
    read-only context); window row y is image row y + y_offset. ``means`` holds ``acc[:, :5] / acc[:, 5]``
    and is kept up to date with ``acc``; ``candidates`` (5) and ``ring`` (8) are scratch arrays of the labels'
    dtype, ``pixel`` (6) one of float64 and ``on_boundary`` (width) one of uint8 (allocated by the caller:
    ``np.empty`` inside the kernel costs numba compilation time); ``can_leave`` is ``_CAN_LEAVE``. Returns the
    number of pixels moved.

    Only boundary pixels (a 4-neighbour in another superpixel) are visited. Before each row, ``on_boundary``
    marks them in one branch-free loop over the row's inner pixels (vectorised) and two ends, which is most of
    a pass's saving: a row's marks stay right until one of its pixels moves, because the rows above and below
    do not change while it is swept, and a move can only make the next pixel of the sweep a boundary pixel,
    which is then marked. A marked pixel that is no longer on a boundary has no candidate but its own
    superpixel, so the labels are those of visiting every pixel and testing its 4-neighbours at its turn.

    The kernel is written with few statements (loops over a pixel's six sums and five features, the boundary
    marks inline rather than in a kernel of their own, numpy's error model: no zero-division checks, as no
    count it divides by can be 0) because numba's first compilation, which a first run after an install waits
    for, grows with the statements and functions it types and lowers. The arithmetic, and its order, is that of
    the distance ``D`` above, so the labels are those of the longer kernel before 2026-12-07, bit for bit
    (checked on 17 images of four datasets): the warm-up's compilation took 2.38-2.41 s of CPU against
    2.53 s (minimum of 5)."""
    height, width = labels.shape
    changed = 0
    step = -1 if reverse else 1
    pixel[5] = 1.0  # the count term of the sums
    for yi in range(row_stop - row_start):
        y = row_stop - 1 - yi if reverse else row_start + yi
        gy = y + y_offset
        row = labels[y]
        up = labels[y - 1] if y > 0 else row  # the row itself at the window's top and bottom
        down = labels[y + 1] if y < height - 1 else row
        for x in range(1, width - 1):
            v = row[x]
            on_boundary[x] = (v != up[x]) | (v != down[x]) | (v != row[x - 1]) | (v != row[x + 1])
        for x in (0, width - 1):  # the ends, with the row's own pixel standing in for the one outside
            v = row[x]
            left = x - 1 if x > 0 else 0
            right = x + 1 if x < width - 1 else x
            on_boundary[x] = (v != up[x]) | (v != down[x]) | (v != row[left]) | (v != row[right])
        for xi in range(width):
            x = width - 1 - xi if reverse else xi
            if on_boundary[x] == 0:  # most pixels are inside a superpixel
                continue
            own = labels[y, x]
            if acc[own, 5] <= 1.0:
                continue
            # The 8 neighbours in ring order, -1 outside the image (labels are >= 0).
            if 0 < y < height - 1 and 0 < x < width - 1:  # all 8 inside the band: no bounds tests
                ring[0] = labels[y - 1, x - 1]
                ring[1] = labels[y - 1, x]
                ring[2] = labels[y - 1, x + 1]
                ring[3] = labels[y, x + 1]
                ring[4] = labels[y + 1, x + 1]
                ring[5] = labels[y + 1, x]
                ring[6] = labels[y + 1, x - 1]
                ring[7] = labels[y, x - 1]
                n_inside = 8
            else:
                n_inside = 0
                for j in range(8):
                    ny = y + ring_dy[j]
                    nx = x + ring_dx[j]
                    ring[j] = labels[ny, nx] if 0 <= ny < height and 0 <= nx < width else -1
                    if ring[j] >= 0:
                        n_inside += 1
            # Candidate superpixels: the 4-neighbours' (up, left, right, down; each once), then the own one.
            n_cand = 0
            for j in (1, 7, 3, 5):
                k = ring[j]
                if k >= 0 and k != own:
                    seen = False
                    for c in range(n_cand):
                        seen = seen or candidates[c] == k
                    if not seen:
                        candidates[n_cand] = k
                        n_cand += 1
            candidates[n_cand] = own
            n_cand += 1
            for i in range(3):
                pixel[i] = lab[y, x, i]
            pixel[3] = gy
            pixel[4] = x
            best = own
            best_d = 1e300
            for c in range(n_cand):
                k = candidates[c]
                colour = 0.0  # ||c(p) - c_k||^2, then ||p - p_k||^2, summed in the order of D
                for i in range(3):
                    diff = pixel[i] - means[k, i]
                    colour += diff * diff
                space = 0.0
                for i in range(3, 5):
                    diff = pixel[i] - means[k, i]
                    space += diff * diff
                d = colour + spatial_weight * space
                if smoothness > 0.0:
                    others = n_inside  # 8-neighbours in the image and not in k
                    for j in range(8):
                        if ring[j] == k:
                            others -= 1
                    d += smoothness * others
                if d < best_d or (d == best_d and k == own):
                    best_d = d
                    best = k
            if best == own:
                continue
            inside = 0  # the 8-neighbours in the own superpixel, bit j for ring entry j
            for j in range(8):
                if ring[j] == own:
                    inside |= 1 << j
            if can_leave[inside]:
                labels[y, x] = best
                if 0 <= x + step < width:  # the next pixel of the sweep now has a neighbour in another superpixel
                    on_boundary[x + step] = 1
                for i in range(6):
                    acc[own, i] -= pixel[i]
                    acc[best, i] += pixel[i]
                for i in range(5):
                    means[own, i] = acc[own, i] / acc[own, 5]
                    means[best, i] = acc[best, i] / acc[best, 5]
                changed += 1
    return changed


def _sweep_arguments(lab: np.ndarray, labels: np.ndarray, acc: np.ndarray | None = None,
                    means: np.ndarray | None = None, spatial_weight: float = 1.0, smoothness: float = 1.0,
                    reverse: bool = False, row_start: int = 0, row_stop: int = 0, y_offset: int = 0) -> tuple:
    """The arguments of one call of the refinement's sweep kernel, ``_refine_rows``, scratch arrays included.

    The defaults make a call that sweeps no row (what :mod:`uhrseg.grid.warmup` compiles the kernel with): the
    kernel's types are those of every call :func:`refine_store` makes. ``lab`` is (h, W, 3) uint8, ``labels``
    (h, W) int32, ``acc`` (K, 6) and ``means`` (K, 5) float64 (zeros of K = 2 when None).
    """
    width = labels.shape[1]
    acc = np.zeros((2, 6)) if acc is None else acc
    means = np.zeros((2, 5)) if means is None else means
    return (lab, labels, acc, means, float(spatial_weight), float(smoothness), bool(reverse), int(row_start),
            int(row_stop), int(y_offset), _RING_DY, _RING_DX, np.empty(5, np.int32), np.empty(8, np.int32),
            np.empty(6, np.float64), _CAN_LEAVE, np.empty(width, np.uint8))


#: Rows per chunk of a refinement pass. The chunks of a pass are swept in two phases, every other chunk in each,
#: and the chunks of a phase in parallel; fixed, so that the labels depend on it but not on the number of threads.
REFINE_CHUNK_ROWS = 512


def refine_store(lab, labels, n_labels: int, iterations: int = DEFAULT_REFINE_ITERATIONS,
                 compactness: float = DEFAULT_COMPACTNESS, smoothness: float = DEFAULT_SMOOTHNESS,
                 band_rows: int = 1024, threads: int | None = None) -> int:
    """:func:`refine_boundaries` over row stores, in chunks of rows, so that neither map sits in memory whole.

    A pass sweeps the image in chunks of :data:`REFINE_CHUNK_ROWS` rows, each read with one row of context above
    and below, in two phases: the first, third, fifth ... chunk in the pass's direction (top down on forward
    passes, bottom up on backward ones), then the others. The chunks of a phase are never adjacent, so they run
    in parallel threads: each starts from the superpixel sums as they were when its phase began and keeps its
    own moves; the sums (integers, so exact in any order) are added up when the phase ends. An image of at most
    two chunks (1024 rows) is therefore refined exactly as by one sweep in raster order; on a taller one, a
    superpixel that reaches into two chunks of one phase sees only its own chunk's moves until the phase ends
    (on the 5K photograph at n = 5000, 8 passes: 1680 of its 14.7 M pixels end in another superpixel than after
    one sweep per pass, 0.25 % of the 665 000 pixels the refinement moves).
    The labels do not depend on ``band_rows`` or ``threads``, nor on the stores (tested).

    Parameters
    ----------
    lab : row store of (H, W, 3) uint8
        The image in 8-bit CIELAB (:func:`lab8`), e.g. :class:`uhrseg.stores.FileStore`; only read.
    labels : row store of (H, W) int32
        Superpixel labels ``0 .. n_labels - 1``, each 4-connected; refined in place.
    n_labels : int
        Number of superpixels ``K``.
    iterations, compactness, smoothness
        As in :func:`refine_boundaries`.
    band_rows : int
        Rows per band of the first pass that sums each superpixel's colour and position: memory is about
        ``band_rows * W * 7`` bytes, and ``REFINE_CHUNK_ROWS * W * 7`` bytes per thread for the passes (with
        :class:`uhrseg.stores.FileStore`; :class:`uhrseg.stores.ArrayStore` reads are views).
    threads : int, optional
        Threads for the chunks of a phase; default: the CPUs this process may use (:func:`uhrseg.threads.usable_cpus`).

    Returns
    -------
    int
        Number of passes run (fewer than ``iterations`` when a pass moved no pixel).

    Raises
    ------
    ValueError
        If the stores' shapes differ, ``n_labels < 1``, ``band_rows < 1`` or ``threads < 1``.
    """
    height, width = labels.shape[:2]
    if tuple(lab.shape) != (height, width, 3):
        raise ValueError(f"lab must be (H, W, 3) like labels {labels.shape}, got {lab.shape}")
    if n_labels < 1 or band_rows < 1 or (threads is not None and threads < 1):
        raise ValueError(f"n_labels, band_rows and threads must be >= 1, got {n_labels}, {band_rows} and {threads}")
    step = np.sqrt(height * width / n_labels)
    spatial_weight = (compactness / step) ** 2
    chunks = [(y0, min(height, y0 + REFINE_CHUNK_ROWS)) for y0 in range(0, height, REFINE_CHUNK_ROWS)]
    n_threads = max(1, min(threads or usable_cpus(), (len(chunks) + 1) // 2))
    bands = [(y0, min(height, y0 + band_rows)) for y0 in range(0, height, band_rows)]

    def add_sums(share: list[tuple[int, int]]) -> np.ndarray:
        """The superpixel sums over some of the bands (integers in float64: exact in any order)."""
        sums = np.zeros((n_labels, 6), dtype=np.float64)
        for y0, y1 in share:
            _add_sums(lab.read(y0, y1), labels.read(y0, y1), sums, y0)
        return sums

    def sweep(chunk: tuple[int, int], reverse: bool, start: np.ndarray) -> tuple[int, np.ndarray]:
        """One chunk's sweep from the sums ``start``; returns the pixels moved and the chunk's sums after it."""
        y0, y1 = chunk
        w0, w1 = max(0, y0 - 1), min(height, y1 + 1)
        window = labels.read(w0, w1)
        sums = start.copy()
        with np.errstate(divide="ignore", invalid="ignore"):  # ids that no pixel has are never read
            means = sums[:, :5] / sums[:, 5:]
        moved = _refine_rows(*_sweep_arguments(lab.read(w0, w1), window, sums, means, spatial_weight, smoothness,
                                              reverse, y0 - w0, y1 - w0, w0))
        labels.write(y0, window[y0 - w0 : y1 - w0])
        return moved, sums

    with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="uhrseg-refine") as pool:
        acc = sum(pool.map(add_sums, [bands[t::n_threads] for t in range(n_threads)]))
        for i in range(iterations):
            reverse = i % 2 == 1
            ordered = chunks[::-1] if reverse else chunks
            changed = 0
            for phase in (ordered[0::2], ordered[1::2]):
                start = acc
                if len(phase) == 1 or n_threads == 1:
                    results = [sweep(chunk, reverse, start) for chunk in phase]
                else:
                    results = list(pool.map(lambda chunk: sweep(chunk, reverse, start), phase))
                acc = start.copy()
                for moved, sums in results:
                    changed += moved
                    acc += sums - start
            if changed == 0:
                return i + 1
    return iterations


def refine_boundaries(image: np.ndarray, labels: np.ndarray, iterations: int = DEFAULT_REFINE_ITERATIONS,
                      compactness: float = DEFAULT_COMPACTNESS, smoothness: float = DEFAULT_SMOOTHNESS) -> np.ndarray:
    """Move superpixel boundaries onto the image's edges at full resolution.

    Each boundary pixel may move to a 4-neighbour's superpixel when that superpixel is closer under SLIC's
    distance (Achanta et al., TPAMI 2012: CIELAB colour plus ``m``-weighted position) plus the smoothness prior of
    SEEDS and ETPS (Yao et al., CVPR 2015), ``D`` in this module's docstring, and never when moving it would split
    its superpixel.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8, uint16 or float32 in [0, 1]
        RGB image at full resolution.
    labels : (H, W) ndarray of int
        Superpixel labels ``0 .. K-1``, each superpixel 4-connected (e.g. after :func:`enforce_connectivity`).
    iterations : int
        Passes over the boundary pixels (stops early when a pass moves nothing).
    compactness : float
        ``m`` of the distance (default 2.5, chosen on BSDS500 val; SLIC's own default is 10): larger keeps
        superpixels compact.
    smoothness : float
        ``lambda`` of the prior (default 150), in squared 8-bit Lab units per 8-neighbour; larger gives smoother
        boundaries.

    Returns
    -------
    (H, W) ndarray of int32
        Refined labels with the ids of ``labels``: the same superpixels, each still 4-connected and non-empty.
        The input is not modified.

    Raises
    ------
    ValueError
        If the shapes do not match, ``labels`` has negative ids, or ``iterations``, ``compactness`` or
        ``smoothness`` is negative.
    """
    if image.ndim != 3 or image.shape[2] != 3 or labels.shape != image.shape[:2]:
        raise ValueError(f"image must be (H, W, 3) and labels (H, W) of the same size, got {image.shape} and "
                         f"{labels.shape}")
    if iterations < 0 or not (0 <= compactness < math.inf and 0 <= smoothness < math.inf):  # NaN too
        raise ValueError(f"iterations must be >= 0, compactness and smoothness finite and >= 0, got {iterations}, "
                         f"{compactness} "
                         f"and {smoothness}")
    current = np.ascontiguousarray(labels, dtype=np.int32)
    if current.size == 0 or iterations == 0:
        return current.copy()
    if current.min() < 0:
        raise ValueError("labels must be >= 0")
    current = current.copy()
    refine_store(ArrayStore(lab8(image)), ArrayStore(current), int(current.max()) + 1, iterations, compactness,
                 smoothness, band_rows=current.shape[0])
    return current
