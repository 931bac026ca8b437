"""Name the grid cells that the suites compute and cache one at a time."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Cell:
    """One grid point: a (depth, bn_every, use_skip) net; seed is the CIFAR repeat (None for gradients)."""

    depth: int
    bn_every: int | None  # None: no BatchNorm
    use_skip: bool
    seed: int | None = None

    @property
    def cell_id(self) -> str:
        bn = "none" if self.bn_every is None else str(self.bn_every)
        name = f"depth{self.depth}-bn{bn}-{'skip' if self.use_skip else 'noskip'}"
        return name if self.seed is None else f"{name}-seed{self.seed}"

    @property
    def label(self) -> str:
        bn = "no BN" if self.bn_every is None else f"BN every {self.bn_every}"
        text = f"depth {self.depth}, {bn}, {'skip' if self.use_skip else 'no skip'}"
        return text if self.seed is None else f"{text}, seed {self.seed}"

    def columns(self) -> dict:
        """Return the cell's identifying columns as the tidy tables name them."""
        row = {"depth": self.depth, "bn_every": self.bn_every, "skip": self.use_skip}
        if self.seed is not None:
            row["seed"] = self.seed
        return row


@dataclass
class CellResult:
    """What one cell produced: contract-table fragments plus anything later steps need (e.g. a model state)."""

    tables: dict[str, pd.DataFrame]
    extra: dict = field(default_factory=dict)


def grid_cells(depths, bn_every, use_skip, seeds=(None,)) -> list[Cell]:
    """Return the cells of a grid in the lab's loop order: depth, then BatchNorm frequency, then skip, then seed."""
    return [Cell(d, b, s, seed) for d, b, s, seed in itertools.product(depths, bn_every, use_skip, seeds)]
