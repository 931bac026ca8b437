import pandas as pd
import pytest

from resreport.cache import CellCache, code_fingerprint, digest, key_parts
from resreport.cells import Cell, CellResult
from resreport.suites import GRADIENT_MODULES, cell_settings
from resreport.config import GradientConfig

CELL = Cell(5, 3, True)
BASE = dict(cell=CELL, settings={"n_inits": 30}, code="code-a", data="data-a", torch_version="2.14.1", device="cpu")


def parts(**changes):
    arguments = {**BASE, **changes}
    return key_parts(arguments["cell"], arguments["settings"], arguments["code"], arguments["data"],
                     arguments["torch_version"], arguments["device"])


@pytest.mark.parametrize("change, part", [
    ({"cell": Cell(5, 3, False)}, "cell"),
    ({"settings": {"n_inits": 31}}, "settings"),
    ({"code": "code-b"}, "code"),
    ({"data": "data-b"}, "data"),
    ({"torch_version": "2.15.0"}, "torch"),
    ({"device": "cuda"}, "device"),
])
def test_each_key_part_changes_the_key(change, part):
    changed = parts(**change)
    assert digest(changed) != digest(parts())
    assert [name for name in changed if changed[name] != parts()[name]] == [part]


def test_key_ignores_dict_order():
    assert digest({"a": 1, "b": 2}) == digest({"b": 2, "a": 1})


def test_growing_the_grid_does_not_change_existing_cells_settings():
    small, large = GradientConfig(depths=(2, 5)), GradientConfig(depths=(2, 5, 10), bn_every=(None, 2))
    assert cell_settings(small) == cell_settings(large)
    assert cell_settings(small) != cell_settings(GradientConfig(n_inits=3))


def test_code_fingerprint_covers_only_the_suites_modules(tmp_path, monkeypatch):
    import resreport.cache as cache_module

    for name in ["gradients.py", "render.py"]:
        (tmp_path / name).write_text(f"# {name}\n")
    monkeypatch.setattr(cache_module, "PACKAGE_DIR", tmp_path)
    before = code_fingerprint(["gradients.py"])
    (tmp_path / "render.py").write_text("# an unrelated edit\n")
    assert code_fingerprint(["gradients.py"]) == before
    (tmp_path / "gradients.py").write_text("# a change to the computation\n")
    assert code_fingerprint(["gradients.py"]) != before


def test_real_suite_modules_exist():
    assert code_fingerprint(GRADIENT_MODULES)


def result():
    return CellResult({"t": pd.DataFrame({"a": [1.0, 2.0]})}, {"note": "x"})


def test_saved_cell_loads_back_for_the_same_key_only(tmp_path):
    cache = CellCache(tmp_path, "gradients")
    assert cache.load(CELL, parts()) is None
    cache.save(CELL, parts(), result())
    loaded = cache.load(CELL, parts())
    pd.testing.assert_frame_equal(loaded.tables["t"], result().tables["t"])
    assert loaded.extra == {"note": "x"}
    assert cache.load(CELL, parts(code="code-b")) is None


def test_state_reports_cached_stale_with_changed_part_and_missing(tmp_path):
    cache = CellCache(tmp_path, "gradients")
    assert cache.state(CELL, parts()) == ("missing", [])
    cache.save(CELL, parts(), result())
    assert cache.state(CELL, parts()) == ("cached", [])
    assert cache.state(CELL, parts(code="code-b", device="cuda")) == ("stale", ["code", "device"])


def test_a_result_without_its_key_record_is_not_cached(tmp_path):
    cache = CellCache(tmp_path, "gradients")
    cache.save(CELL, parts(), result())
    next(cache.folder.glob("*.json")).unlink()  # as if killed between the two writes
    assert cache.load(CELL, parts()) is None


def test_failure_is_recorded_and_cleared_by_a_later_success(tmp_path):
    cache = CellCache(tmp_path, "gradients")
    cache.save_failure(CELL, parts(), "Traceback: boom")
    assert cache.state(CELL, parts()) == ("failed", [])
    cache.save(CELL, parts(), result())
    assert cache.state(CELL, parts()) == ("cached", [])
    assert not cache.failure_path(CELL).exists()
