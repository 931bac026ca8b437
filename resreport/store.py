"""Read and write the tidy result tables atomically (the contract between compute and render)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

# At least these columns, in this order, per table (DESIGN.md); extra columns follow.
TABLE_COLUMNS: dict[str, list[str]] = {
    "gradients": ["depth", "bn_every", "skip", "protocol", "init", "x", "grad"],
    "gradient_metrics": ["depth", "bn_every", "skip", "protocol", "metric", "value"],
    "curves": ["depth", "bn_every", "skip", "seed", "epoch", "split", "loss", "accuracy"],
    "cells": ["depth", "bn_every", "skip", "seed", "best_epoch", "best_val_loss", "final_train_loss",
              "diverged", "seconds"],
    "test_score": ["depth", "bn_every", "skip", "seed", "epoch", "test_loss", "test_accuracy", "ci_low",
                   "ci_high", "n_test"],
    "confusion": ["true_class", "predicted_class", "count"],  # the chosen model on the test set
}


class ResultsMissing(FileNotFoundError):
    """A results table the caller needs has not been computed yet."""


def normalise(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Order the contract's columns first and give bn_every / skip their contract dtypes."""
    columns = TABLE_COLUMNS[table]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"table {table} lacks columns {missing}")
    frame = frame[columns + [c for c in frame.columns if c not in columns]].copy()
    if "bn_every" in frame:
        frame["bn_every"] = frame["bn_every"].astype("Int64")  # nullable: <NA> means no BatchNorm
    if "skip" in frame:
        frame["skip"] = frame["skip"].astype(bool)
    return frame.reset_index(drop=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside path, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(frame: pd.DataFrame, results_dir: Path, table: str) -> Path:
    """Write one contract table as Parquet, atomically."""
    path = Path(results_dir) / f"{table}.parquet"
    frame = normalise(frame, table)
    atomic_write_bytes(path, frame.to_parquet(index=False))
    return path


def read_table(results_dir: Path, table: str) -> pd.DataFrame:
    """Read one contract table; say which command produces it when it is missing."""
    path = Path(results_dir) / f"{table}.parquet"
    if not path.is_file():
        raise ResultsMissing(f"{path} does not exist; run `python -m resreport build` (or `run`) first")
    return pd.read_parquet(path)


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically, sorted and indented for diffs."""
    atomic_write_bytes(Path(path), json.dumps(payload, indent=2, sort_keys=True, default=str).encode())


def read_json(path: Path) -> dict:
    """Read a JSON file written by write_json."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
