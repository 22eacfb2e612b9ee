"""Score what a GPU session's training brought back: the paper's ablation table from our runs (issue 13).

Run HERE (the 2-core CPU), after ``session.sh all`` or ``session.sh train`` returned its tars::

    python benchmarks/gpu/ingest.py FOLDER_WITH_TARS --out docs/results/gpu-training [--n-segments 600] [--jobs 2]

For each ``NAME.tar`` (``pcnet``, ``scn``, ``pcnet-no-dpc``, ``pcnet-multiclass``, ``pcnet-ours``; any other name
is scored as PCNet, or SCN when it starts with ``scn``) it unpacks ``best.pt`` (else ``last.pt``), ``log.csv`` and
the run's log under ``OUT/NAME/``, reads the run's record (iterations, batch, crops, wall seconds, hardware) and
scores the checkpoint with ``uhrseg evaluate`` (the command a user runs; the torch backend, as for any checkpoint
file) on the BSDS500 test split at ``n`` superpixels, tolerance as in ``docs/results/bsds500``: the network's own
labels (``METHOD:refine=0:oversegment=1``) and the whole pipeline with the defaults (``METHOD``). The packaged
``pcnet.pt`` and ``scn.pt`` are scored the same way, beside them. Cells already in ``OUT`` are reused (the
evaluation's own resumption), so a second call after more tars arrive scores only the new ones.

Writes ``OUT/report.md`` (one row per checkpoint; the ablations named as in the paper: full, without the DPC
branch, multi-class patch labels instead of the binary guidance mask) and ``OUT/ablation.json``.

Nothing here needs a GPU: a checkpoint is scored on the CPU. ``--dataset`` and ``--bsds500-root`` score another
split or a smaller copy of BSDS500 (e.g. for a dry run).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tarfile
from pathlib import Path

#: The runs of ``session.sh train`` and what each is, in the paper's words.
RUNS = {
    "pcnet": "PCNet, full (DPC branch, binary guidance mask)",
    "pcnet-no-dpc": "PCNet without the DPC branch (ablation)",
    "pcnet-multiclass": "PCNet with multi-class patch labels instead of the binary guidance mask (ablation)",
    "scn": "SCN (the baseline)",
    "pcnet-ours": "PCNet as packaged (BatchNorm in the 4x head, guide branch, 3 head blocks)",
}
METRICS = ("k", "br", "bp", "asa")


def unpack(tar: Path, out: Path) -> Path:
    """Extract ``tar`` (one folder ``NAME/``) under ``out``; returns ``out / NAME``."""
    name = tar.name.removesuffix(".tar")
    with tarfile.open(tar) as archive:
        members = [m for m in archive.getmembers() if m.isfile() and Path(m.name).parts[0] == name
                   and ".." not in Path(m.name).parts]
        if not members:
            raise SystemExit(f"{tar}: holds no file under {name}/")
        archive.extractall(out, members=members)
    return out / name


def run_record(checkpoint: Path) -> dict:
    """The training record of a checkpoint written by ``uhrseg train`` (iterations, batch, crop, wall seconds)."""
    from uhrseg.models.checkpoint import read_checkpoint

    training = read_checkpoint(checkpoint).get("training") or {}
    keys = ("iterations", "batch_size", "crop", "patch", "wall_seconds", "hardware")
    return {k: training.get(k) for k in keys}


def evaluate(method: str, weights: Path | None, out: Path, args: argparse.Namespace) -> dict[str, dict]:
    """``uhrseg evaluate`` of the network's own labels and the pipeline; returns ``{spec: {k, br, bp, asa}}``."""
    specs = [f"{method}:refine=0:oversegment=1", method]
    command = [sys.executable, "-m", "uhrseg", "evaluate", "--dataset", args.dataset, "--methods", ",".join(specs),
               "--n-segments", str(args.n_segments), "--jobs", str(args.jobs), "--out", str(out), "-q"]
    if args.tolerance is not None:
        command += ["--tolerance", str(args.tolerance)]
    if args.bsds500_root:
        command += ["--bsds500-root", str(args.bsds500_root)]
    if weights is not None:
        command += ["--weights", f"{method}={weights}"]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    with open(out / "summary.csv", newline="") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    return {spec: {m: float(rows[spec][m]) for m in METRICS} for spec in specs}


def cell(scores: dict) -> str:
    return f"{scores['br']:.4f} / {scores['bp']:.4f} / {scores['asa']:.4f} (K {scores['k']:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tars", type=Path, help="folder holding the NAME.tar files of session.sh")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dataset", default="bsds500:test")
    parser.add_argument("--bsds500-root", type=Path)
    parser.add_argument("--n-segments", type=int, default=600)
    parser.add_argument("--tolerance", type=int, help="pixels (default: the benchmark's, as in docs/results/bsds500)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--title", default="The paper's recipe on a GPU, and its ablations, scored on the CPU")
    args = parser.parse_args()

    order = list(RUNS)
    tars = sorted(args.tars.glob("*.tar"),
                  key=lambda t: (order.index(t.stem) if t.stem in order else len(order), t.name))
    if not tars:
        raise SystemExit(f"{args.tars}: no .tar file")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in ("pcnet", "scn"):
        scores = evaluate(method, None, args.out / f"packaged-{method}", args)
        rows.append({"run": f"packaged {method}.pt", "what": f"the packaged {method}.pt (CPU recipes)",
                     "method": method, "record": {}, "raw": scores[f"{method}:refine=0:oversegment=1"],
                     "pipeline": scores[method]})
    for tar in tars:
        folder = unpack(tar, args.out)
        name = folder.name
        checkpoint = next((folder / f for f in ("best.pt", "last.pt") if (folder / f).is_file()), None)
        if checkpoint is None:
            print(f"{tar}: no checkpoint (the run stopped before its first); skipped", flush=True)
            continue
        method = "scn" if name.startswith("scn") else "pcnet"
        scores = evaluate(method, checkpoint, folder / "eval", args)
        rows.append({"run": name, "what": RUNS.get(name, name), "method": method, "checkpoint": checkpoint.name,
                     "record": run_record(checkpoint), "raw": scores[f"{method}:refine=0:oversegment=1"],
                     "pipeline": scores[method]})
        print(json.dumps(rows[-1]), flush=True)

    (args.out / "ablation.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        f"# {args.title}",
        "",
        f"`python benchmarks/gpu/ingest.py {args.tars} --out {args.out} --dataset {args.dataset} --n-segments "
        f"{args.n_segments}`. The training recipe of each run is in its row. Each checkpoint scored with "
        f"`uhrseg evaluate` at n = {args.n_segments}: the network's "
        "own labels (`METHOD:refine=0:oversegment=1`) and the pipeline with the defaults (`METHOD`). BR / BP / ASA "
        "(K).",
        "",
        "| run | checkpoint | iterations x batch (crop) | wall (s) | own labels | pipeline |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec = r["record"]
        schedule = (f"{rec['iterations']} x {rec['batch_size']} ({rec['crop']})" if rec.get("iterations")
                    else "")
        lines.append(f"| {r['what']} | {r.get('checkpoint', '')} | {schedule} | {rec.get('wall_seconds') or ''} | "
                     f"{cell(r['raw'])} | {cell(r['pipeline'])} |")
    by_run = {r["run"]: r for r in rows}
    if {"pcnet", "pcnet-no-dpc", "pcnet-multiclass"} <= set(by_run):
        full, no_dpc, multi = (by_run[k]["raw"] for k in ("pcnet", "pcnet-no-dpc", "pcnet-multiclass"))
        lines += ["", "The paper's orderings on the network's own labels (BR at n = "
                  f"{args.n_segments}): +DPC > without DPC: {full['br']:.4f} against {no_dpc['br']:.4f} "
                  f"({'holds' if full['br'] > no_dpc['br'] else 'does not hold'}); binary mask > multi-class "
                  f"patch labels: {full['br']:.4f} against {multi['br']:.4f} "
                  f"({'holds' if full['br'] > multi['br'] else 'does not hold'})."]
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
