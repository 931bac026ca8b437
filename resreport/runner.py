"""Run a suite's cells through the per-cell cache: compute only new keys, isolate failures, show progress."""
from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from resreport.cache import CellCache, code_fingerprint, key_parts
from resreport.cells import Cell, CellResult
from resreport.suites import Suite

log = logging.getLogger(__name__)


@dataclass
class SuiteOutcome:
    name: str
    code_fingerprint: str = ""  # of the modules that computed the cells (part of every key)
    results: dict[Cell, CellResult] = field(default_factory=dict)
    computed: list[Cell] = field(default_factory=list)
    cached: list[Cell] = field(default_factory=list)
    failed: dict[Cell, str] = field(default_factory=dict)  # cell -> one-line error

    def counts(self) -> dict[str, int]:
        return {"computed": len(self.computed), "cached": len(self.cached), "failed": len(self.failed)}


def suite_key_parts(suite: Suite, device: str, code: str | None = None) -> dict[Cell, dict]:
    """Return every cell's key parts for this suite on this device."""
    import torch

    code = code or code_fingerprint(suite.module_files)
    return {cell: key_parts(cell, suite.settings, code, suite.data_fingerprint, torch.__version__, device)
            for cell in suite.cells}


def run_suite(suite: Suite, cache_root: Path, device: str, *, force: bool = False) -> SuiteOutcome:
    """Load cached cells, compute the rest one at a time, and save each as soon as it finishes."""
    cache = CellCache(cache_root, suite.name)
    outcome = SuiteOutcome(suite.name, code_fingerprint(suite.module_files))
    parts_by_cell = suite_key_parts(suite, device, outcome.code_fingerprint)
    todo = []
    for cell, parts in parts_by_cell.items():
        result = None if force else cache.load(cell, parts)
        if result is None:
            todo.append(cell)
        else:
            outcome.results[cell] = result
            outcome.cached.append(cell)
    log.info("%s: %d cells cached, %d to compute", suite.name, len(outcome.cached), len(todo))
    bar = tqdm(todo, desc=suite.name, unit="cell", dynamic_ncols=True, disable=not todo)
    for cell in bar:
        bar.set_postfix_str(cell.label)
        try:
            result = suite.run_cell(cell, _epoch_progress(bar, cell))
        except Exception as error:  # isolate the cell: record it, keep going, fail the build at the end
            message = f"{type(error).__name__}: {error}"
            log.error("%s %s failed: %s", suite.name, cell.label, message)
            log.debug("%s", traceback.format_exc())
            cache.save_failure(cell, parts_by_cell[cell], traceback.format_exc())
            outcome.failed[cell] = message
            continue
        cache.save(cell, parts_by_cell[cell], result)
        outcome.results[cell] = result
        outcome.computed.append(cell)
    bar.close()
    return outcome


def _epoch_progress(bar, cell: Cell):
    """Return a callback that shows a cell's epoch and training loss on the suite's bar."""
    def report(epoch: int, n_epochs: int, train_loss: float) -> None:
        bar.set_postfix_str(f"{cell.label} | epoch {epoch}/{n_epochs} | loss {train_loss:.4f}")
    return report
