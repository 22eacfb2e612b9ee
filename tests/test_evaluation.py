"""Benchmark runner, summaries, plots, report and the ``uhrseg evaluate`` command on real BSDS500 images."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import DRONE
from uhrseg.cli import main
from uhrseg.datasets import BSDS500
from uhrseg.evaluation import (
    EvaluationPlan,
    Setting,
    at_matched_k,
    br_bp_area,
    parse_counts,
    read_pairs,
    run_evaluation,
    summarize,
)

METRIC_KEYS = ("method", "setting", "image", "gt", "n_requested", "k", "br", "bp", "asa", "ue", "ev", "co")


def strip(rows):
    return sorted(tuple(r[k] for k in METRIC_KEYS) for r in rows)


def test_parse_counts():
    assert parse_counts("200,400,...,1200") == [200, 400, 600, 800, 1000, 1200]
    assert parse_counts("100:300:100") == [100, 200, 300]
    assert parse_counts("5, 7") == [5, 7]
    assert parse_counts("0.3:1.8:0.3", float) == [0.3, 0.6, 0.9, 1.2, 1.5, 1.8]
    for bad, why in (("", "values must be positive and finite"), ("a,b", "cannot read 'a,b'"),
                     ("0,5", "values must be positive and finite"), ("200,...,400", "cannot read '200,...,400'"),
                     ("400,200,...,1000", "cannot read '400,200,...,1000'")):
        with pytest.raises(ValueError, match=re.escape(why)):
            parse_counts(bad)
    # --scales nan and inf were accepted, and a step of 0 was a ZeroDivisionError traceback
    for bad, message in (("nan", "values must be positive and finite"),
                         ("0.5,inf", "values must be positive and finite"), ("0.5:1:0", "cannot read '0.5:1:0'")):
        with pytest.raises(ValueError, match=message):
            parse_counts(bad, float)


def test_setting_scale_gives_scn_grid_count():
    assert Setting(scale=1.0).n_for((321, 481)) == 603  # 321 * 481 / 256
    assert Setting(n=400).n_for((321, 481)) == 400 and Setting(scale=0.5).name == "scale0.5"


def test_run_resume_and_jobs(mini_bsds, tmp_path):
    data = BSDS500(mini_bsds, "test")
    plan = EvaluationPlan(methods=["slico"], settings=[Setting(n=100), Setting(n=300)])
    pairs = run_evaluation(data, plan, tmp_path / "a", progress=False)
    rows = read_pairs(pairs)
    n_gts = sum(len(data.ground_truths(n)) for n in data.names)
    assert len(rows) == 2 * n_gts
    for r in rows:
        assert 0 < r["br"] <= 1 and 0 < r["bp"] <= 1 and 0.7 < r["asa"] <= 1 and 0 <= r["ue"] < 0.5
        assert r["tolerance"] == 1 and r["seconds"] > 0 and r["peak_rss_bytes"] > 0
    assert {r["k"] for r in rows if r["setting"] == "n300"} != {300}, "K must be the produced count"

    # Kill simulation: keep the first image's rows and half a line of the next.
    shard = tmp_path / "a" / "runs" / "slico" / "n100.csv"
    lines = shard.read_text().splitlines(keepends=True)
    first = lines[0] + "".join(line for line in lines[1:] if ",100007," in line)
    shard.write_text(first + lines[-1][: len(lines[-1]) // 2])
    before = [r for r in read_pairs(shard) if r["image"] == "100007"]
    resumed = read_pairs(run_evaluation(data, plan, tmp_path / "a", progress=False))
    assert strip(resumed) == strip(rows)
    again = [r for r in resumed if r["image"] == "100007" and r["setting"] == "n100"]
    assert [r["seconds"] for r in again] == [r["seconds"] for r in before], "finished cells were recomputed"

    parallel = read_pairs(run_evaluation(data, EvaluationPlan(["slico"], [Setting(n=100), Setting(n=300)], jobs=2),
                                         tmp_path / "b", progress=False))
    assert strip(parallel) == strip(rows)


def _mark_stale(path, method):
    """Set the seconds of ``method``'s rows in a pairs CSV or shard to -1, a value no run writes: a cell that
    --redo recomputes gets its real time back, a reused one keeps -1 (timings alone may repeat to 4 decimals)."""
    import csv

    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    assert any(r["method"] == method for r in rows), (path, method)
    for r in rows:
        if r["method"] == method:
            r["seconds"] = "-1"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_stored_report_resumes_from_pairs_csv_and_redo_recomputes(mini_bsds, tmp_path, capsys):
    """A report kept without runs/ (as in docs/results/) is extended by running only the added method; --redo
    recomputes only the methods it names; a changed tolerance is refused instead of mixing scores."""
    import shutil

    out = tmp_path / "report"
    argv = ["evaluate", "--dataset", "bsds500:test", "--bsds500-root", str(mini_bsds), "--n-segments", "150",
            "--out", str(out), "-q"]
    assert main([*argv, "--methods", "slico,seeds"]) == 0, capsys.readouterr().err
    first = {(r["method"], r["image"], r["gt"]): r for r in read_pairs(out / "pairs.csv")}
    shutil.rmtree(out / "runs")  # what a stored report keeps: pairs.csv, summary.csv, report.md, plots

    assert main([*argv, "--methods", "slico,seeds,fh"]) == 0, capsys.readouterr().err
    rows = {(r["method"], r["image"], r["gt"]): r for r in read_pairs(out / "pairs.csv")}
    assert {k[0] for k in rows} == {"slico", "seeds", "fh"} and len(rows) == 3 * len(first) // 2
    for key, r in first.items():  # reused, not re-timed
        assert rows[key]["seconds"] == r["seconds"] and rows[key]["br"] == r["br"]
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["fh", "seeds", "slico"]

    for shard in (out / "runs" / "seeds").glob("*.csv"):
        _mark_stale(shard, "seeds")  # a recomputed cell cannot keep these seconds; a reused one would
    assert main([*argv, "--methods", "slico,seeds,fh", "--redo", "seeds"]) == 0, capsys.readouterr().err
    again = {(r["method"], r["image"], r["gt"]): r for r in read_pairs(out / "pairs.csv")}
    assert all(again[k]["seconds"] == rows[k]["seconds"] for k in rows if k[0] != "seeds")
    seeds = [k for k in rows if k[0] == "seeds"]
    assert all(again[k]["seconds"] >= 0 for k in seeds), "--redo seeds reused its cells"
    assert all(again[k]["br"] == rows[k]["br"] for k in seeds)  # same method, same labels, same scores
    report = (out / "report.md").read_text()
    assert "Computed again in this invocation (--redo): seeds." in report
    assert "--redo" not in report.split("```bash", 1)[1].split("```", 1)[0], "the command to reproduce"
    shutil.rmtree(out / "runs")  # --redo on a stored report: its shards are rebuilt first, then dropped
    _mark_stale(out / "pairs.csv", "fh")
    assert main([*argv, "--methods", "slico,seeds,fh", "--redo", "fh"]) == 0, capsys.readouterr().err
    third = {(r["method"], r["image"], r["gt"]): r for r in read_pairs(out / "pairs.csv")}
    assert all(third[k]["seconds"] == again[k]["seconds"] for k in again if k[0] != "fh")
    assert all(third[k]["seconds"] >= 0 for k in again if k[0] == "fh"), "stored fh cells reused"
    assert all(third[k]["br"] == again[k]["br"] for k in again if k[0] == "fh")

    assert main([*argv, "--methods", "slico", "--redo", "lsc"]) == 2
    assert "--redo: lsc not among the methods of this run (slico)" in capsys.readouterr().err
    assert main([*argv, "--methods", "slico", "--tolerance", "2"]) == 2
    err = capsys.readouterr().err
    assert "n150.csv: finished cells were scored at tolerance [1] px, this run asks 2 px" in err
    assert main([*argv, "--methods", "slico", "--tolerance", "2", "--redo", "slico"]) == 0
    assert {r["tolerance"] for r in read_pairs(out / "pairs.csv")} == {2}


def test_given_labels_equal_to_ground_truth_are_perfect(mini_bsds, tmp_path):
    data = BSDS500(mini_bsds, "test")
    (tmp_path / "labels").mkdir()
    for name in data.names:
        np.save(tmp_path / "labels" / f"{name}.npy", data.ground_truths(name)[0] - 1)
    rows = read_pairs(run_evaluation(data, EvaluationPlan([], [], labels_dir=tmp_path / "labels"), tmp_path / "o",
                                     progress=False))
    first = [r for r in rows if r["gt"] == 0]
    assert len(first) == 3
    for r in first:
        assert (r["br"], r["asa"], r["ue"]) == (1.0, 1.0, 0.0) and r["method"] == "labels"


def test_summaries_mean_and_worst():
    def row(image, gt, br, ue):
        return {"method": "m", "setting": "n1", "image": image, "gt": gt, "n_requested": 1, "k": 10, "br": br,
                "bp": 0.5, "asa": 0.9, "ue": ue, "ev": 0.8, "co": 0.3, "seconds": 2.0, "peak_rss_bytes": 2**20}

    rows = [row("a", 0, 0.9, 0.1), row("a", 1, 0.5, 0.3), row("b", 0, 0.7, 0.2)]
    (s,) = summarize(rows)
    assert s["br"] == pytest.approx((0.9 + 0.5 + 0.7) / 3)
    assert s["br_worst"] == pytest.approx((0.5 + 0.7) / 2)
    assert s["ue_worst"] == pytest.approx((0.3 + 0.2) / 2)
    assert (s["images"], s["pairs"], s["seconds_per_image"], s["peak_rss_mb"]) == (2, 3, 2.0, 1.0)


def test_matched_k_on_the_bsds500_report():
    """At a measured K the interpolation returns that setting; between two it lies between; outside, None."""
    with open(Path(__file__).parents[1] / "docs/results/bsds500/summary.csv") as f:
        rows = [{k: (v if k in ("method", "setting") else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
    slic = sorted((r for r in rows if r["method"] == "slic"), key=lambda r: r["k"])
    assert len(slic) >= 3
    a, b = slic[1], slic[2]
    at_a = at_matched_k(slic, a["k"])
    assert at_a["br"] == pytest.approx(a["br"]) and at_a["asa"] == pytest.approx(a["asa"])
    mid = at_matched_k(slic, (a["k"] + b["k"]) / 2)
    for m in ("br", "bp", "asa", "ue"):
        assert mid[m] == pytest.approx((a[m] + b[m]) / 2)
    assert min(a["br"], b["br"]) < mid["br"] < max(a["br"], b["br"])  # BR grows with K: a real interpolation
    assert at_matched_k(slic, slic[0]["k"] - 1) is None and at_matched_k(slic, slic[-1]["k"] + 1) is None


def test_br_bp_area():
    assert br_bp_area([(0.5, 0.2), (1.0, 0.2)]) == pytest.approx(0.1)
    assert br_bp_area([(1.0, 0.0), (0.0, 1.0)]) == pytest.approx(0.5)


def test_evaluate_command(mini_bsds, tmp_path, capsys, pcnet_grid_ckpt):
    out = tmp_path / "report"
    code = main(["evaluate", "--dataset", "bsds500:test", "--bsds500-root", str(mini_bsds), "--methods",
                 "pcnet,pcnet:refine=0,seeds", "--weights", f"pcnet={pcnet_grid_ckpt}", "--n-segments", "100,200",
                 "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert {p.name for p in out.iterdir()} >= {"pairs.csv", "summary.csv", "br_bp.png", "metrics_vs_k.png",
                                              "report.md"}
    with open(out / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert sorted({r["method"] for r in summary}) == ["pcnet", "pcnet:refine=0", "seeds"]
    rows = {(r["method"], r["setting"]): r for r in summary}
    for setting in ("n100", "n200"):  # the grid network's boundaries move onto the image's edges
        refined, raw = rows[("pcnet", setting)], rows[("pcnet:refine=0", setting)]
        assert float(refined["br"]) > float(raw["br"]) + 0.05 and refined["k"] == raw["k"]
    report = (out / "report.md").read_text()
    assert "uhrseg evaluate --dataset bsds500:test" in report and "| seeds |" in report


def test_evaluate_command_errors(mini_bsds, tmp_path, capsys):
    base = ["evaluate", "--bsds500-root", str(mini_bsds), "--out", str(tmp_path / "o"), "-q"]
    assert main([*base, "--dataset", "bsds500:test", "--methods", "quickshift"]) == 2
    assert "unknown method 'quickshift'" in capsys.readouterr().err
    assert main([*base, "--dataset", "bsds500:test", "--methods", "slic:refine=x"]) == 2
    assert "refine must be an integer >= 0, got 'x'" in capsys.readouterr().err
    assert main([*base, "--dataset", "bsds500:dev"]) == 2
    assert "unknown BSDS500 split" in capsys.readouterr().err
    assert main([*base, "--dataset", "bsds500:test", "--weights", "pcnet=" + str(tmp_path / "x.pt"),
                 "--methods", "pcnet"]) == 2
    assert "x.pt: weights file not found" in capsys.readouterr().err
    for spec, message in (("pcnet:oversegment=0.5", "pcnet:oversegment=0.5: oversegmentation must be finite and >= 1"),
                          ("slic:oversegment=1", "method 'slic' takes no oversegmentation"),
                          ("slic:precision=bf16", "method 'slic' takes no precision"),
                          ("pcnet:precision=int8", "precision must be one of fp32, bf16, fp16, got 'int8'")):
        assert main([*base, "--dataset", "bsds500:test", "--methods", spec]) == 2
        assert message in capsys.readouterr().err
    # A negative tolerance was refused only by the metrics, after the first method had run and its CSV was written
    for rest in (["--dataset", "bsds500:test", "--methods", "slic"],
                 ["--task", "semantic", "--dataset", str(DRONE / "test"), "--models", "isdnet:drone"]):
        assert main([*base, *rest, "--tolerance", "-1"]) == 2
        assert "tolerance must be >= 0 pixels, got -1" in capsys.readouterr().err
    # These were refused (or crashed) after the output folder had been made, and left it behind
    semantic = ["--task", "semantic", "--dataset", str(DRONE / "test")]
    labels = tmp_path / "labels"
    labels.mkdir()
    np.save(labels / "100007.npy", np.zeros((321, 481), np.int32))
    for rest, message in (
            (["--dataset", "bsds500:test", "--methods", "slic", "--redo", "fh"], "--redo: fh not among the methods"),
            ([*semantic, "--models", "isdnet:drone", "--redo", "x"], "--redo: x not among the models"),
            ([*semantic, "--models", "isdnet:deepglobe"], "classes"),  # 7-class weights on the 24-class dataset
            # was a FileNotFoundError traceback after the first image
            (["--dataset", "bsds500:test", "--labels", str(labels)], "no label map (NAME.png/.tif/.npy/.csv) for 2 of "
                                                                     "the 3 images: 100039, 100099"),
            # were each computed and counted twice over (exit 0)
            (["--dataset", "bsds500:test", "--methods", "slic,seeds,slic"], "method given more than once: slic"),
            (["--dataset", "bsds500:test", "--methods", "slic", "--n-segments", "200,200"],
             "setting given more than once: n200"),
            ([*semantic, "--models", "isdnet:drone,isdnet:drone"], "model labels must differ")):
        assert main([*base, *rest]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # refused before any output
    from uhrseg.evaluation.semantic import SemanticPlan, parse_model_specs

    with pytest.raises(ValueError, match="model given more than once: isdnet:drone"):  # the API, without the CLI
        SemanticPlan(models=parse_model_specs("isdnet:drone") * 2)
    # An image too small for n: the message names the image (it named only the size)
    assert main([*base, "--dataset", "bsds500:test", "--methods", "slic", "--n-segments", "40000"]) == 2
    assert "bsds500:test, image 100007, slic at n40000: n_segments=40000 is more than a quarter" in \
        capsys.readouterr().err
    assert not list((tmp_path / "o").rglob("*.csv"))  # no header-only shard left for the failed cell
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("keep me")
    for task, rest in (("superpixels", ["--dataset", "bsds500:test"]),
                       ("semantic", ["--dataset", str(DRONE / "test"), "--models", "isdnet:drone"])):
        # was a FileExistsError traceback from mkdir
        assert main(["evaluate", "--bsds500-root", str(mini_bsds), "--out", str(not_a_folder), "-q",
                     "--task", task, *rest]) == 2
        assert f"{not_a_folder}: output path exists and is not a folder" in capsys.readouterr().err
    assert not_a_folder.read_text() == "keep me"


def test_method_specs_with_refinement():
    from uhrseg.evaluation import parse_method_spec

    assert parse_method_spec("pcnet") == ("pcnet", {})
    assert parse_method_spec("pcnet:refine=0") == ("pcnet", {"refine_iterations": 0})
    assert parse_method_spec("slic:refine=3") == ("slic", {"refine_iterations": 3})
    assert parse_method_spec("pcnet:refine=8:smoothness=100:compactness=2.5") == (
        "pcnet", {"refine_iterations": 8, "refine_smoothness": 100.0, "refine_compactness": 2.5})
    assert parse_method_spec("pcnet:refine=0:oversegment=1") == ("pcnet", {"refine_iterations": 0,
                                                                           "oversegmentation": 1.0})
    assert parse_method_spec("scn:precision=bf16:refine=0") == ("scn", {"precision": "bf16", "refine_iterations": 0})
    assert parse_method_spec("pcnet:oversegment=3:mergeboundary=3000") == (
        "pcnet", {"oversegmentation": 3.0, "merge_boundary_weight": 3000.0})
    assert parse_method_spec("pcnet:texture=0") == ("pcnet", {"merge_texture_weight": 0.0})
    expected = "expected METHOD[:refine=N]"
    for bad, why in (("nope", "unknown method 'nope'"), ("pcnet:refine", expected), ("pcnet:iters=2", expected),
                     ("pcnet:refine=-1", "refine must be an integer >= 0, got '-1'"),
                     ("pcnet:refine=1.5", "refine must be an integer >= 0, got '1.5'"),
                     ("pcnet:smoothness=-3", "smoothness must be a number >= 0, got '-3'"),
                     ("pcnet:smoothness=x", "smoothness must be a number >= 0, got 'x'"),
                     ("pcnet:oversegment=-1", "oversegment must be a number >= 0, got '-1'"),
                     ("pcnet:precision=half", "precision must be one of fp32, bf16, fp16, got 'half'"),
                     ("pcnet:mergeboundary=-5", "mergeboundary must be a number >= 0, got '-5'"),
                     ("pcnet:mergeboundary=nan", "mergeboundary must be a number >= 0, got 'nan'"),
                     ("pcnet:smoothness=inf", "smoothness must be a number >= 0, got 'inf'"),
                     ("pcnet:texture=-1", "texture must be a number >= 0, got '-1'")):
        with pytest.raises(ValueError, match=re.escape(why)):
            parse_method_spec(bad)


def test_parallel_network_evaluation_after_the_parent_ran_torch(mini_bsds, tmp_path):
    """A parent that has used torch's thread pool (as `uhrseg evaluate` does when it checks the weights) must
    not hang its workers: forked children deadlocked on the inherited OpenMP pool."""
    import torch

    from uhrseg import SuperpixelPredictor

    torch.ones(512, 512).matmul(torch.ones(512, 512))  # starts the parent's OpenMP threads
    SuperpixelPredictor("pcnet", device="cpu")
    data = BSDS500(mini_bsds, "test")
    plan = EvaluationPlan(["pcnet"], [Setting(n=200)], jobs=2, device="cpu")
    serial = EvaluationPlan(["pcnet"], [Setting(n=200)], jobs=1, device="cpu")
    parallel_rows = read_pairs(run_evaluation(data, plan, tmp_path / "p", progress=False))
    serial_rows = read_pairs(run_evaluation(data, serial, tmp_path / "s", progress=False))
    key = lambda r: (r["image"], r["gt"])  # noqa: E731
    assert [r["br"] for r in sorted(parallel_rows, key=key)] == [r["br"] for r in sorted(serial_rows, key=key)]
    assert all(float(r["br"]) > 0.5 for r in parallel_rows)


def _siblings(task) -> str:
    """A run_shards worker: one CSV row with the number of live processes that share this worker's parent."""
    import os

    parent = os.getppid()
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    count += int(f.read().rsplit(")", 1)[1].split()[1]) == parent
            except OSError:  # ended meanwhile
                pass
    return f"{task},{count}\n"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts processes through Linux's /proc")
def test_run_shards_starts_no_more_workers_than_tasks(tmp_path):
    from uhrseg.evaluation.runner import run_shards

    # -j 24 for 2 images started 24 processes (each importing uhrseg), 22 of them idle
    shard = tmp_path / "s" / "shard.csv"
    run_shards([(shard, [0, 1])], _siblings, ["task", "siblings"], jobs=24, progress=False)
    rows = list(csv.DictReader(open(shard)))
    assert sorted(r["task"] for r in rows) == ["0", "1"]
    # the two workers, plus multiprocessing's resource tracker where it runs one
    assert all(2 <= int(r["siblings"]) <= 3 for r in rows), rows
