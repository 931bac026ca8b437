"""End to end: a tiny complete project built into a temporary folder through the CLI."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from imagefolder import make_image_folder
from resreport.cli import main

TINY = """
[report]
title = "Tiny report"
author = "Test Author"

[gradients]
depths = [2, 3]
bn_every = ["none", 1]
n_inits = 2
n_points = 16
max_lag = 4

[cifar]
depths = [3]
bn_every = ["none", 1]
use_skip = [true]
n_epochs = 2
batch_size = 16
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    config = root / "report.toml"
    config.write_text(TINY)
    data = make_image_folder(root / "data", n_train=20, n_test=8)
    return {"config": config, "data": data, "root": root}


def build(project, out, *extra):
    return main(["build", "--config", str(project["config"]), "--data", str(project["data"]), "--out", str(out),
                 "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def built(project):
    out = project["root"] / "out"
    assert build(project, out) == 0
    return out


def test_build_writes_every_table_the_manifest_and_both_report_files(built):
    for table in ("gradients", "gradient_metrics", "curves", "cells", "test_score", "confusion"):
        assert (built / "results" / f"{table}.parquet").is_file(), table
    assert (built / "results" / "manifest.json").is_file()
    assert (built / "report.html").stat().st_size > 0 and (built / "report.pdf").stat().st_size > 0
    assert "No previous build" in (built / "changes.md").read_text()
    metrics = pd.read_parquet(built / "results" / "gradient_metrics.parquet")
    assert len(metrics[["depth", "bn_every", "skip"]].drop_duplicates()) == 2 * 2 * 2
    assert "ratio_to_depth2" in set(metrics["metric"])


def test_rebuild_with_nothing_changed_computes_no_cell(project, built, capsys):
    assert build(project, built) == 0
    printed = capsys.readouterr().out
    assert "gradients: 0 cells computed, 8 cached" in printed
    assert "cifar: 0 cells computed, 2 cached" in printed
    assert "Metrics that moved (0)" in (built / "changes.md").read_text()


def test_adding_a_depth_computes_only_its_cells(project, tmp_path, capsys):
    out = tmp_path / "out"
    assert build(project, out) == 0
    bigger = tmp_path / "bigger.toml"
    bigger.write_text(TINY.replace("depths = [2, 3]", "depths = [2, 3, 4]"))
    capsys.readouterr()
    assert main(["build", "--config", str(bigger), "--data", str(project["data"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "gradients: 4 cells computed, 8 cached" in printed
    assert "cifar: 0 cells computed, 2 cached" in printed
    assert "Cells added (8)" in (out / "changes.md").read_text()  # 4 cells x 2 protocols


def test_render_alone_rebuilds_the_report_from_the_tables(project, built, capsys):
    before = (built / "report.pdf").stat().st_mtime_ns
    assert main(["render", "--config", str(project["config"]), "--out", str(built)]) == 0
    assert (built / "report.pdf").stat().st_mtime_ns > before


def test_failing_cell_exits_1_lists_it_and_leaves_results_and_report_untouched(project, tmp_path, monkeypatch,
                                                                               capsys):
    import resreport.gradients

    out = tmp_path / "out"
    assert build(project, out) == 0
    saved = {name: (out / name).read_bytes() for name in ("report.html", "report.pdf",
                                                          "results/gradient_metrics.parquet")}
    original = resreport.gradients.run_gradient_cell

    def flaky(cell, config, device):
        if cell.depth == 3 and cell.use_skip:
            raise RuntimeError("simulated failure")
        return original(cell, config, device)

    monkeypatch.setattr(resreport.gradients, "run_gradient_cell", flaky)
    assert build(project, out, "--force") == 1
    assert "simulated failure" in capsys.readouterr().err
    for name, content in saved.items():
        assert (out / name).read_bytes() == content, name


SLOW_CELLS = ("import sys, time, resreport.gradients as g; run = g.run_gradient_cell; "
              "g.run_gradient_cell = lambda *a: (time.sleep(0.25), run(*a))[1]; "
              "from resreport.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGINT])
def test_killed_build_resumes_with_only_the_unfinished_cells(tmp_path, kill):
    config = tmp_path / "report.toml"
    config.write_text("[gradients]\ndepths = [2, 10, 25]\nbn_every = [\"none\", 5, 3, 1]\nn_inits = 10\n")
    n_cells = 3 * 4 * 2
    out = tmp_path / "out"
    arguments = ["run", "gradients", "--config", str(config), "--out", str(out), "--device", "cpu"]
    # the first run sleeps 0.25 s per cell, so the kill lands mid-grid even on a loaded machine
    process = subprocess.Popen([sys.executable, "-c", SLOW_CELLS, *arguments], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    records = out / "cache" / "cells" / "gradients"
    deadline = time.monotonic() + 120
    while not list(records.glob("*.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(kill)
    assert process.wait() != 0
    finished = len(list(records.glob("*.json")))
    assert 1 <= finished < n_cells, "the kill should land mid-grid"
    assert not (out / "results").exists()
    rerun = subprocess.run([sys.executable, "-m", "resreport", *arguments], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    computed = int(re.search(r"gradients: (\d+) cells computed", rerun.stdout).group(1))
    assert computed == n_cells - finished
    metrics = pd.read_parquet(out / "results" / "gradient_metrics.parquet")
    assert len(metrics[["depth", "bn_every", "skip"]].drop_duplicates()) == n_cells


def test_results_killed_between_the_two_renames_of_a_swap_come_back(tmp_path):
    from resreport.pipeline import _recover_interrupted_swap

    old = tmp_path / ".results-old"
    old.mkdir()
    (old / "cells.parquet").write_bytes(b"previous")
    _recover_interrupted_swap(tmp_path / "results")
    assert (tmp_path / "results" / "cells.parquet").read_bytes() == b"previous"
