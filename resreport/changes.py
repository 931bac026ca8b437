"""Compare a build's key metrics with the previous build's and describe what moved."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from resreport.cells import Cell

GRADIENT_KEYS = ["mean_abs_grad", "lag1_autocorr", "nonfinite_fraction"]
CIFAR_KEYS = ["best_val_loss", "final_train_loss", "best_epoch"]


def key_metrics(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Return the metrics a change report watches, one row per (table, cell, metric)."""
    rows = []
    if "gradient_metrics" in tables:
        metrics = tables["gradient_metrics"]
        for row in metrics[metrics["metric"].isin(GRADIENT_KEYS)].itertuples(index=False):
            rows.append(("gradient_metrics", _label(row, f"{row.protocol}"), row.metric, row.value))
    if "cells" in tables:
        for row in tables["cells"].itertuples(index=False):
            for metric in CIFAR_KEYS:
                rows.append(("cells", _label(row, f"seed {row.seed}"), metric, getattr(row, metric)))
    if "test_score" in tables:
        for row in tables["test_score"].itertuples(index=False):
            rows.append(("test_score", "chosen model", "test_accuracy", row.test_accuracy))
    return pd.DataFrame(rows, columns=["table", "cell", "metric", "value"])


def compare(previous: pd.DataFrame, current: pd.DataFrame, rtol: float) -> dict:
    """Return the cells added and removed and the metrics whose relative change exceeds rtol."""
    before_cells = set(zip(previous["table"], previous["cell"]))
    after_cells = set(zip(current["table"], current["cell"]))
    merged = previous.merge(current, on=["table", "cell", "metric"], suffixes=("_before", "_after"))
    moved = [
        {"table": r.table, "cell": r.cell, "metric": r.metric, "before": r.value_before, "after": r.value_after}
        for r in merged.itertuples(index=False)
        if _moved(r.value_before, r.value_after, rtol)
    ]
    return {
        "rtol": rtol,
        "added": sorted(f"{t}: {c}" for t, c in after_cells - before_cells),
        "removed": sorted(f"{t}: {c}" for t, c in before_cells - after_cells),
        "moved": moved,
    }


def read_previous(results_dir: Path) -> tuple[dict[str, pd.DataFrame], str | None]:
    """Read the watched tables of the last build, if there was one, and when it was made."""
    tables = {}
    for name in ("gradient_metrics", "cells", "test_score"):
        path = Path(results_dir) / f"{name}.parquet"
        if path.is_file():
            tables[name] = pd.read_parquet(path)
    manifest = Path(results_dir) / "manifest.json"
    created = pd.read_json(manifest, typ="series").get("created") if manifest.is_file() else None
    return tables, created


def to_markdown(changes: dict) -> str:
    """Write the change report as Markdown for changes.md and CI logs."""
    lines = ["# What changed since the previous build", ""]
    if changes.get("previous_build") is None:
        lines.append("No previous build in this output folder: everything is new.")
        return "\n".join(lines) + "\n"
    lines.append(f"Compared with the build of {changes['previous_build']}; a metric has moved when its "
                 f"relative change exceeds {changes['rtol']:g}.")
    for title, key in (("Cells added", "added"), ("Cells removed", "removed")):
        lines += ["", f"## {title} ({len(changes[key])})", ""]
        lines += [f"- {item}" for item in changes[key]] or ["None."]
    lines += ["", f"## Metrics that moved ({len(changes['moved'])})", ""]
    if changes["moved"]:
        lines += ["| table | cell | metric | before | after |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {m['table']} | {m['cell']} | {m['metric']} | {m['before']:.4g} | {m['after']:.4g} |"
                  for m in changes["moved"]]
    else:
        lines.append("None: every watched metric is within tolerance.")
    return "\n".join(lines) + "\n"


def _label(row, suffix: str) -> str:
    return f"{Cell.from_row(row).label}, {suffix}"


def _moved(before: float, after: float, rtol: float) -> bool:
    before, after = float(before), float(after)
    if math.isnan(before) or math.isnan(after):
        return math.isnan(before) != math.isnan(after)
    if math.isinf(before) or math.isinf(after):
        return before != after
    return abs(after - before) > rtol * max(abs(before), abs(after), 1e-300)
