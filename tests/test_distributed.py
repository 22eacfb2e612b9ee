"""``--ray``: 40 real images on a real local Ray cluster (127.0.0.1, 2 workers), one worker killed mid-run; every
output byte-identical to a single-machine run; a rerun skips what is complete."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import DRONE, PHOTOS
from uhrseg.cli import main
from uhrseg.distributed import RECORDS

ray = pytest.importorskip("ray")
RAY = str(Path(sys.executable).with_name("ray"))
IMAGES = sorted((DRONE / "test" / "images").glob("*.jpg"))[:36] + sorted(PHOTOS.glob("*-2560x1600.jpg"))[:4]
OPTIONS = ["superpixels", "-n", "600", "--device", "cpu", "-q"]


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "summary.json"}


@pytest.fixture(scope="module")
def cluster():
    """A real Ray head on 127.0.0.1 with 2 CPUs, stopped afterwards."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                    "--include-dashboard", "false", "--disable-usage-stats"], check=True, env=env,
                   capture_output=True)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield f"127.0.0.1:{port}"
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)


def worker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ray::ImageWorker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_forty_images_on_a_local_cluster_with_a_killed_worker(cluster, tmp_path):
    assert len(IMAGES) == 40
    local = tmp_path / "local"
    assert main([*OPTIONS[:1], *map(str, IMAGES), *OPTIONS[1:], "--out", str(local)]) == 0

    out = tmp_path / "ray"
    killed: list[int] = []

    def kill_one_worker_mid_run() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            records = list((out / RECORDS).glob("*.json")) if (out / RECORDS).exists() else []
            pids = worker_pids()
            if len(records) >= 8 and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_mid_run)
    killer.start()
    command = [str(Path(sys.executable).with_name("uhrseg")), *OPTIONS[:1], *map(str, IMAGES), *OPTIONS[1:], "--out",
               str(out), "--ray", cluster, "--ray-workers", "2"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)  # a hang guard
    killer.join()
    assert proc.returncode == 0, proc.stderr
    assert killed, "no worker was killed"
    # every output present and byte-identical to the single-machine run
    assert outputs(out) == outputs(local)
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(e["file"]).name for e in summary["images"]] == [p.name for p in IMAGES]  # each image once, in order
    assert summary["failed"] == [] and summary["method"] == "pcnet"
    assert not list(out.glob(".*.part*")) and not list(out.glob(".uhrseg-work-*"))  # nothing half-written left

    # resumable: a rerun redoes only the image whose output went missing
    victim = out / f"{IMAGES[3].stem}_overlay.jpg"
    victim.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in (out / RECORDS).glob("*.json")}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (out / RECORDS).glob("*.json")}
    assert [n for n in after if after[n] != before[n]] == [f"{IMAGES[3].stem}.json"]
    assert outputs(out) == outputs(local)
    assert len(json.loads((out / "summary.json").read_text())["images"]) == 40


def test_ray_errors_are_one_line(cluster, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["superpixels", str(bad), "-m", "slic", "-q", "--out", str(tmp_path / "o"), "--ray-workers", "0",
                 "--ray"]) == 2
    assert "--ray-workers must be >= 1" in capsys.readouterr().err
    # a corrupt image among good ones: reported in one line, not retried, the others written
    out = tmp_path / "mixed"
    assert main(["superpixels", str(IMAGES[0]), str(bad), "-m", "slic", "-n", "300", "-q", "--out", str(out),
                 "--ray", cluster]) == 2
    err = capsys.readouterr().err
    assert f"uhrseg: error: {bad}" in err and "1 of 2 images written" in err
    assert sorted(p.name for p in out.iterdir()) == [RECORDS, f"{IMAGES[0].stem}_labels.png",
                                                    f"{IMAGES[0].stem}_overlay.jpg", "summary.json"]
    assert [p.name for p in (out / RECORDS).iterdir()] == [f"{IMAGES[0].stem}.json"]  # a failed image: no record


def test_ray_run_refused_by_its_workers_leaves_no_folder(cluster, tmp_path, capsys):
    """Missing weights are found by the workers' header, after the output folder and its record folder were made:
    both were left behind (the run without --ray leaves none)."""
    out = tmp_path / "o"
    assert main(["superpixels", str(IMAGES[0]), "-q", "--out", str(out), "--weights", str(tmp_path / "none.pt"),
                 "--ray", cluster]) == 2
    assert "weights file not found" in capsys.readouterr().err
    assert not out.exists()
    kept = tmp_path / "kept"  # a folder the user made stays, without the record folder
    kept.mkdir()
    assert main(["superpixels", str(IMAGES[0]), "-q", "--out", str(kept), "--weights", str(tmp_path / "none.pt"),
                 "--ray", cluster]) == 2
    assert kept.is_dir() and list(kept.iterdir()) == []
