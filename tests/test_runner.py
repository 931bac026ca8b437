import pandas as pd

from resreport.cells import Cell, CellResult, grid_cells
from resreport.runner import run_suite
from resreport.suites import Suite


def make_suite(calls, failing=None):
    def run_cell(cell, progress):
        calls.append(cell)
        if cell == failing:
            raise RuntimeError("exploded on purpose")
        return CellResult({"t": pd.DataFrame({"depth": [cell.depth]})})

    cells = grid_cells((2, 3), (None,), (False, True))
    return Suite(name="fake", cells=cells, settings={"n": 1}, module_files=["cells.py"], run_cell=run_cell)


def test_second_run_computes_nothing(tmp_path):
    calls = []
    first = run_suite(make_suite(calls), tmp_path, "cpu")
    second = run_suite(make_suite(calls), tmp_path, "cpu")
    assert len(first.computed) == 4 and second.computed == [] and len(second.cached) == 4
    assert len(calls) == 4


def test_force_recomputes_every_cell(tmp_path):
    calls = []
    run_suite(make_suite(calls), tmp_path, "cpu")
    assert len(run_suite(make_suite(calls), tmp_path, "cpu", force=True).computed) == 4


def test_a_failing_cell_is_recorded_and_the_rest_still_run(tmp_path):
    calls = []
    bad = Cell(2, None, True)
    outcome = run_suite(make_suite(calls, failing=bad), tmp_path, "cpu")
    assert list(outcome.failed) == [bad] and "exploded on purpose" in outcome.failed[bad]
    assert len(outcome.computed) == 3 and len(calls) == 4
    assert (tmp_path / "fake" / f"{bad.cell_id}.failed.json").is_file()
    again = run_suite(make_suite(calls), tmp_path, "cpu")
    assert again.computed == [bad]  # only the failed cell is retried
