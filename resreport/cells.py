"""Name the grid cells that the suites compute and cache one at a time."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import pandas as pd


def bn_label(bn_every: int | None) -> str:
    """Name a BatchNorm frequency as the report does: 'no BN' or 'BN every 3'."""
    return "no BN" if bn_every is None else f"BN every {bn_every}"


def bn_order(bn_every: int | None) -> float:
    """Sort key for BatchNorm frequencies in the lab's order: none first, then sparse to dense."""
    return -math.inf if bn_every is None else -bn_every


def present_bn_every(frame: pd.DataFrame) -> list[int | None]:
    """Return the BatchNorm frequencies a tidy table holds (<NA> as None), in the lab's order."""
    return sorted({None if pd.isna(b) else int(b) for b in frame["bn_every"].unique()}, key=bn_order)


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
        text = f"depth {self.depth}, {bn_label(self.bn_every)}, {'skip' if self.use_skip else 'no skip'}"
        return text if self.seed is None else f"{text}, seed {self.seed}"

    @classmethod
    def from_row(cls, row, with_seed: bool = False) -> "Cell":
        """Return the cell a tidy-table row (mapping, Series or namedtuple) belongs to; bn_every <NA> is None."""
        row = row._asdict() if hasattr(row, "_asdict") else row
        bn_every = None if pd.isna(row["bn_every"]) else int(row["bn_every"])
        return cls(int(row["depth"]), bn_every, bool(row["skip"]), int(row["seed"]) if with_seed else None)

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
