"""Describe each suite to the cell runner: its cells, the settings in their keys, its code, how to run a cell."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from resreport.cells import Cell, CellResult
from resreport.config import CifarConfig, GradientConfig

GRID_FIELDS = ("depths", "bn_every", "use_skip", "n_seeds")  # the grid names cells; it is not part of a cell's key

GRADIENT_MODULES = ["cells.py", "layout.py", "models.py", "gradients.py", "stacked.py", "gradient_metrics.py"]
CIFAR_MODULES = ["cells.py", "layout.py", "models.py", "data.py", "cifar.py"]


@dataclass
class Suite:
    name: str
    cells: list[Cell]
    settings: dict  # suite settings shared by every cell's key
    module_files: list[str]
    run_cell: Callable[[Cell, Callable | None], CellResult]  # (cell, progress) -> result
    data_fingerprint: str | None = None


def cell_settings(config: GradientConfig | CifarConfig) -> dict:
    """Return a suite config without its grid axes, so adding a depth does not invalidate other cells."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in GRID_FIELDS}


def gradient_suite(config: GradientConfig, device: str) -> Suite:
    """Return the input-gradient suite (no data; 30 initialisations per cell computed together)."""
    from resreport import gradients

    return Suite(
        name="gradients",
        cells=gradients.gradient_cells(config),
        settings=cell_settings(config),
        module_files=GRADIENT_MODULES,
        run_cell=lambda cell, progress: gradients.run_gradient_cell(cell, config, device),
    )


def cifar_suite(config: CifarConfig, data, device: str) -> Suite:
    """Return the CIFAR-10 overfitting suite over already-loaded data."""
    from resreport import cifar

    return Suite(
        name="cifar",
        cells=cifar.cifar_cells(config),
        settings=cell_settings(config),
        module_files=CIFAR_MODULES,
        run_cell=lambda cell, progress: cifar.train_cell(cell, config, data, device, progress=progress),
        data_fingerprint=data.fingerprint,
    )
