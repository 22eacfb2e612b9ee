"""Summaries, plots and the Markdown report of a benchmark run (``pairs.csv`` -> ``summary.csv``, PNGs, report).

Two summaries, as the field uses them (definitions in :mod:`uhrseg.metrics.superpixel`):

* ``mean``: plain mean over all (image, ground truth) pairs (SSN, SCN and PCNet curves);
* ``worst``: per image the worst ground truth (min BR, BP, ASA, EV; max UE), then the mean over images (the
  Stutz benchmark's tables; every image is counted).
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

__all__ = ["METRICS", "at_matched_k", "br_bp_area", "plot_curves", "summarize", "write_report", "write_summary_csv"]

METRICS = ("br", "bp", "asa", "ue", "ev", "co")
_WORST = {"br": min, "bp": min, "asa": min, "ev": min, "ue": max, "co": min}


def summarize(rows: list[dict]) -> list[dict]:
    """One summary row per (method, setting), sorted by method then mean K.

    Returns
    -------
    list of dict
        ``method, setting, images, pairs, n_requested, k`` (means), ``{metric}`` (mean over pairs),
        ``{metric}_worst`` (worst ground truth per image, mean over images), ``seconds_per_image`` (mean),
        ``peak_rss_mb`` (max over images).
    """
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["setting"])].append(r)
    out = []
    for (method, setting), items in groups.items():
        per_image: dict[str, list[dict]] = defaultdict(list)
        for r in items:
            per_image[r["image"]].append(r)
        firsts = [v[0] for v in per_image.values()]
        row = {
            "method": method,
            "setting": setting,
            "images": len(per_image),
            "pairs": len(items),
            "n_requested": float(np.mean([r["n_requested"] for r in firsts])),
            "k": float(np.mean([r["k"] for r in firsts])),
        }
        for m in METRICS:
            row[m] = float(np.nanmean([r[m] for r in items]))
            row[f"{m}_worst"] = float(np.nanmean([_WORST[m](r[m] for r in v) for v in per_image.values()]))
        row["seconds_per_image"] = float(np.mean([r["seconds"] for r in firsts]))
        row["peak_rss_mb"] = max(r["peak_rss_bytes"] for r in firsts) / 2**20
        out.append(row)
    return sorted(out, key=lambda r: (r["method"], r["k"]))


def write_summary_csv(summary: list[dict], path: str | os.PathLike) -> Path:
    """Write :func:`summarize` rows as CSV (atomically)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        for r in summary:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()})
    os.replace(tmp, path)
    return path


def br_bp_area(points: list[tuple[float, float]]) -> float:
    """Area under the BR-BP curve through the measured (BR, BP) points, trapezoids, no extrapolation."""
    pts = sorted(points)
    return float(sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:])))


def at_matched_k(rows: list[dict], k: float) -> dict | None:
    """One method's metrics at exactly ``k`` superpixels, interpolated linearly in K along its sweep.

    Methods reach a requested count only roughly (scikit-image SLIC gives about 470 for n = 600 on BSDS500), so
    comparing the settings nearest a target compares different K. This compares at the same K, as BR-K and ASA-K
    curves do (Stutz et al., "Superpixels: an evaluation of the state-of-the-art", CVIU 2018).

    Parameters
    ----------
    rows : list of dict
        :func:`summarize` rows of one method (any order), each with ``k`` and every :data:`METRICS` entry.
    k : float
        Target number of superpixels.

    Returns
    -------
    dict or None
        ``k`` and ``{metric}`` (mean over pairs) at ``k``; ``None`` when the measured K do not bracket ``k``
        (no extrapolation).
    """
    pts = sorted(rows, key=lambda r: r["k"])
    ks = [r["k"] for r in pts]
    if not ks or not ks[0] <= k <= ks[-1]:
        return None
    return {"k": float(k), **{m: float(np.interp(k, ks, [r[m] for r in pts])) for m in METRICS}}


def _by_method(summary: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for r in summary:
        out[r["method"]].append(r)
    return out


def plot_curves(summary: list[dict], out_dir: str | os.PathLike, title: str = "") -> list[Path]:
    """BR against BP, and ASA, UE, BR, CO against K, one curve per method (PNG files in ``out_dir``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    methods = _by_method(summary)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 5))
    for method, rows in methods.items():
        ax.plot([r["br"] for r in rows], [r["bp"] for r in rows], "o-", label=method, markersize=3)
    ax.set_xlabel("boundary recall BR")
    ax.set_ylabel("boundary precision BP")
    ax.set_title(f"BR-BP {title}".strip())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "br_bp.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    for ax, (metric, label) in zip(axes.flat, [("asa", "ASA"), ("ue", "UE (Neubert-Protzel)"),
                                               ("br", "BR"), ("co", "CO")]):
        for method, rows in methods.items():
            ax.plot([r["k"] for r in rows], [r[metric] for r in rows], "o-", label=method, markersize=3)
        ax.set_xlabel("number of superpixels K")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    paths.append(out_dir / "metrics_vs_k.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def _nearest(rows: list[dict], k: float) -> dict:
    return min(rows, key=lambda r: abs(r["k"] - k))


def write_report(summary: list[dict], path: str | os.PathLike, *, title: str, command: str, notes: list[str],
                 targets: tuple[int, ...] = (200, 600, 1000)) -> Path:
    """Markdown report: per method ASA, UE, BR, BP, CO at K near each target and at matched K (interpolated along
    each method's sweep, :func:`at_matched_k`, where it brackets the target), BR-BP area, seconds per image.

    Written atomically (a ``.part`` file renamed over ``path``).
    """
    methods = _by_method(summary)
    lines = [f"# {title}", "", "Command:", "", "```bash", command, "```", ""]
    lines += notes + [""]
    for target in targets:
        lines += [f"## K near {target}", "",
                  "| method | K | ASA | UE | BR | BP | CO | EV | BR (worst GT) | s / image |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for method, rows in methods.items():
            r = _nearest(rows, target)
            lines.append(f"| {method} | {r['k']:.0f} | {r['asa']:.4f} | {r['ue']:.4f} | {r['br']:.4f} | "
                         f"{r['bp']:.4f} | {r['co']:.4f} | {r['ev']:.4f} | {r['br_worst']:.4f} | "
                         f"{r['seconds_per_image']:.3f} |")
        lines.append("")
    for target in targets:
        matched = {m: at_matched_k(rows, target) for m, rows in methods.items()}
        if not any(matched.values()):
            continue
        lines += [f"## At K = {target}, interpolated along each sweep", "",
                  "| method | ASA | UE | BR | BP | CO | EV |", "|---|---|---|---|---|---|---|"]
        for method, r in matched.items():
            if r is None:
                ks = [x["k"] for x in methods[method]]
                lines.append(f"| {method} | K {min(ks):.0f}-{max(ks):.0f} "
                             "does not bracket it | | | | | |")
            else:
                lines.append(f"| {method} | {r['asa']:.4f} | {r['ue']:.4f} | {r['br']:.4f} | {r['bp']:.4f} | "
                             f"{r['co']:.4f} | {r['ev']:.4f} |")
        lines.append("")
    lines += ["## Over the whole sweep", "",
              "| method | K range | area under BR-BP | mean s / image | peak RSS (MB) |", "|---|---|---|---|---|"]
    for method, rows in methods.items():
        area = br_bp_area([(r["br"], r["bp"]) for r in rows])
        secs = np.mean([r["seconds_per_image"] for r in rows])
        peak = max(r["peak_rss_mb"] for r in rows)
        lines.append(f"| {method} | {rows[0]['k']:.0f}-{rows[-1]['k']:.0f} | {area:.4f} | {secs:.3f} | {peak:.0f} |")
    lines.append("")
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path

