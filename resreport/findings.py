"""Turn the metric tables into findings: a kind, the cells it concerns and the numbers that support it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from resreport.cells import Cell, bn_order
from resreport.config import Thresholds
from resreport.layout import batchnorm_after

PROTOCOLS = ("seed", "per_sample")


@dataclass(frozen=True)
class Finding:
    """One statement the commentary may make; templates turn it into prose."""

    kind: str
    cells: tuple[Cell, ...]
    numbers: dict[str, float]
    protocol: str | None = None  # gradient findings: "seed" or "per_sample"
    detail: dict[str, str] = field(default_factory=dict)
    rows: tuple[dict, ...] = ()  # per-level numbers of an effect finding, e.g. one row per depth


def cell_order(cell: Cell) -> tuple:
    """Sort cells as the lab lists them: depth, then no BatchNorm before sparse before dense, then skip."""
    return (cell.depth, bn_order(cell.bn_every), cell.use_skip)


def batchnorm_precedes_output(depth: int, bn_every: int | None) -> bool:
    """Say whether a BatchNorm follows layer depth-1, i.e. sits directly before the output layer."""
    return (depth - 1) in batchnorm_after(depth, bn_every)


def wide_metrics(gradient_metrics: pd.DataFrame, protocol: str) -> dict[Cell, dict[str, float]]:
    """Return {cell: {metric: value}} for one protocol of the tidy gradient_metrics table."""
    wide: dict[Cell, dict[str, float]] = {}
    for row in gradient_metrics.itertuples(index=False):
        if row.protocol == protocol:
            wide.setdefault(Cell.from_row(row), {})[row.metric] = float(row.value)
        elif protocol == "seed" and row.protocol == "per_sample" and row.metric == "mean_abs_grad":  # the seed artefact is judged against it
            wide.setdefault(Cell.from_row(row), {})["per_sample_mean_abs_grad"] = float(row.value)
    return dict(sorted(wide.items(), key=lambda item: cell_order(item[0])))


def magnitude_kind(cell: Cell, metrics: dict[str, float], protocol: str, thresholds: Thresholds) -> str | None:
    """Classify a cell's gradient size: exploding, seed_protocol_artefact, vanishing, or None (ordinary)."""
    ratio = metrics.get("ratio_to_depth2", math.nan)
    if metrics.get("nonfinite_fraction", 0.0) > 0:
        return "exploding"
    # before the ratio test: the depth-2 baseline may itself be rounding noise (BN every 1), so rounding / rounding
    if protocol == "seed" and batchnorm_precedes_output(cell.depth, cell.bn_every) and _is_rounding_noise(metrics,
                                                                                                          thresholds):
        return "seed_protocol_artefact"
    if ratio > thresholds.exploding_ratio:
        return "exploding"
    if ratio < thresholds.vanishing_ratio:
        return "vanishing"
    return None


def _is_rounding_noise(metrics: dict[str, float], thresholds: Thresholds) -> bool:
    """Whether a seed-protocol |gradient| is rounding noise: zero, or tiny next to the cell's own per_sample one.

    The noise scales with the activations (3.6 at depth 75 where per_sample is 1.4e7), so no absolute cut-off works.
    """
    seed = metrics.get("mean_abs_grad", math.nan)
    own = metrics.get("per_sample_mean_abs_grad", math.nan)
    return seed == 0 or seed <= thresholds.artefact_rel_grad * own


def shape_kind(metrics: dict[str, float], thresholds: Thresholds) -> str | None:
    """Classify a curve's regularity by the per-initialisation lag-1 autocorrelation."""
    autocorr = metrics.get("lag1_autocorr", math.nan)
    if not math.isfinite(autocorr):
        return None
    if autocorr < thresholds.shattered_autocorr:
        return "shattering"
    if autocorr >= thresholds.smooth_autocorr:
        return "smooth"
    return "rough"


def per_layer_factor(ratio: float, depth: int) -> float:
    """Return the factor by which |gradient| changes per added layer: ratio ** (1 / (depth - 2))."""
    if depth <= 2 or not math.isfinite(ratio) or ratio <= 0:
        return math.nan
    return ratio ** (1.0 / (depth - 2))


def _gradient_numbers(cell: Cell, metrics: dict[str, float]) -> dict[str, float]:
    ratio = metrics.get("ratio_to_depth2", math.nan)
    return {
        "mean_abs_grad": metrics.get("mean_abs_grad", math.nan),
        "ratio_to_depth2": ratio,
        "per_layer_factor": per_layer_factor(ratio, cell.depth),
        "nonfinite_fraction": metrics.get("nonfinite_fraction", math.nan),
        "lag1_autocorr": metrics.get("lag1_autocorr", math.nan),
        "lag1_autocorr_of_mean": metrics.get("lag1_autocorr_of_mean", math.nan),
        "sign_changes_per_unit": metrics.get("sign_changes_per_unit", math.nan),
        "per_sample_mean_abs_grad": metrics.get("per_sample_mean_abs_grad", math.nan),  # seed protocol only
    }


def gradient_findings(gradient_metrics: pd.DataFrame, thresholds: Thresholds) -> list[Finding]:
    """Return per-cell magnitude and shape findings per protocol, plus what no cell shows."""
    findings: list[Finding] = []
    for protocol in PROTOCOLS:
        wide = wide_metrics(gradient_metrics, protocol)
        if not wide:
            continue
        kinds_seen: set[str] = set()
        for cell, metrics in wide.items():
            numbers = _gradient_numbers(cell, metrics)
            magnitude = magnitude_kind(cell, metrics, protocol, thresholds)
            shape = None if magnitude in ("seed_protocol_artefact", "exploding") else shape_kind(metrics, thresholds)
            if magnitude is None and shape == "smooth":
                shape = "healthy"  # ordinary size and a smooth curve
            for kind in (magnitude, shape):
                if kind is not None:
                    findings.append(Finding(kind, (cell,), numbers, protocol))
                    kinds_seen.add(kind)
        findings += _absences(wide, kinds_seen, protocol, thresholds)
    findings += protocol_differences(gradient_metrics, thresholds)
    return findings


def _absences(wide: dict[Cell, dict[str, float]], kinds_seen: set[str], protocol: str,
              thresholds: Thresholds) -> list[Finding]:
    """State, with the nearest miss, that no cell shatters, vanishes or explodes when that is so."""
    out = []
    checks = {
        "shattering": ("lag1_autocorr", min, thresholds.shattered_autocorr),
        "vanishing": ("ratio_to_depth2", min, thresholds.vanishing_ratio),
        "exploding": ("ratio_to_depth2", max, thresholds.exploding_ratio),
    }
    for kind, (metric, pick, threshold) in checks.items():
        if kind in kinds_seen:
            continue
        eligible = {c: m[metric] for c, m in wide.items() if math.isfinite(m.get(metric, math.nan))
                    and magnitude_kind(c, m, protocol, thresholds) != "seed_protocol_artefact"}
        if not eligible:
            continue
        nearest = pick(eligible, key=eligible.get)
        out.append(Finding(f"no_{kind}", (nearest,), {metric: eligible[nearest], "threshold": threshold,
                                                        "n_cells": float(len(eligible))}, protocol))
    return out


def protocol_differences(gradient_metrics: pd.DataFrame, thresholds: Thresholds) -> list[Finding]:
    """Return the cells whose magnitude or shape verdict differs between the seed and per_sample protocols."""
    seed, per_sample = (wide_metrics(gradient_metrics, p) for p in PROTOCOLS)
    out = []
    for cell in (c for c in seed if c in per_sample):
        verdicts = {}
        for protocol, wide in (("seed", seed), ("per_sample", per_sample)):
            magnitude = magnitude_kind(cell, wide[cell], protocol, thresholds)
            shape = None if magnitude in ("seed_protocol_artefact", "exploding") else shape_kind(wide[cell], thresholds)
            verdicts[protocol] = magnitude or shape or "ordinary"
        if verdicts["seed"] != verdicts["per_sample"]:
            numbers = {f"{p}_{m}": w[cell].get(m, math.nan) for p, w in (("seed", seed), ("per_sample", per_sample))
                       for m in ("mean_abs_grad", "lag1_autocorr")}
            out.append(Finding("protocol_difference", (cell,), numbers, None, verdicts))
    if seed and per_sample and not out:
        out.append(Finding("protocol_agreement", (), {"n_cells": float(len(set(seed) & set(per_sample)))}))
    return out


def cifar_summary(cells: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Return one row per CIFAR cell (seeds averaged, diverged if any seed diverged) with the gap and accuracy."""
    frame = cells.copy()
    finals = _final_val(curves, cells)
    keys = ["depth", "bn_every", "skip", "seed"]
    frame["bn_every"] = frame["bn_every"].astype("Int64")
    for column in ("final_val_loss", "best_val_accuracy"):
        if column not in frame:
            frame = frame.merge(finals[keys + [column]], on=keys, how="left")
    frame["gap"] = frame["final_val_loss"] - frame["final_train_loss"]
    frame["bn_key"] = frame["bn_every"].astype("Int64").fillna(0).astype(int)
    grouped = frame.groupby(["depth", "bn_key", "skip"], sort=False)
    summary = grouped.agg(
        best_val_loss=("best_val_loss", "mean"), best_epoch=("best_epoch", "median"),
        final_train_loss=("final_train_loss", "mean"), final_val_loss=("final_val_loss", "mean"),
        gap=("gap", "mean"), val_accuracy=("best_val_accuracy", "mean"), diverged=("diverged", "any"),
        n_seeds=("seed", "nunique"), seconds=("seconds", "sum")).reset_index()
    summary["cell"] = [Cell(int(d), None if b == 0 else int(b), bool(s))
                       for d, b, s in zip(summary["depth"], summary["bn_key"], summary["skip"])]
    summary = summary.drop(columns="bn_key")
    order = sorted(range(len(summary)), key=lambda i: cell_order(summary["cell"].iloc[i]))
    return summary.iloc[order].reset_index(drop=True)


def _final_val(curves: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """Return per cell and seed the last epoch's validation loss and the validation accuracy at the best epoch."""
    keys = ["depth", "bn_every", "skip", "seed"]
    val = curves[curves["split"] == "val"].sort_values("epoch")
    val = val.assign(bn_every=val["bn_every"].astype("Int64"))
    last = val.groupby(keys, dropna=False).tail(1)[keys + ["loss"]].rename(columns={"loss": "final_val_loss"})
    best = cells[keys + ["best_epoch"]].assign(bn_every=cells["bn_every"].astype("Int64"))
    best = best.merge(val[keys + ["epoch", "accuracy"]], left_on=keys + ["best_epoch"], right_on=keys + ["epoch"])
    best = best[keys + ["accuracy"]].rename(columns={"accuracy": "best_val_accuracy"})
    return last.merge(best, on=keys, how="left")


def cifar_findings(cells: pd.DataFrame, curves: pd.DataFrame, test_score: pd.DataFrame, thresholds: Thresholds,
                   chance: float = 0.5) -> list[Finding]:
    """Return diverged, failed and overfitting cells, the effects of skip, BatchNorm and depth, and the best model."""
    summary = cifar_summary(cells, curves)
    findings: list[Finding] = []
    trained = []
    for row in summary.itertuples(index=False):
        numbers = {"best_val_loss": row.best_val_loss, "best_epoch": float(row.best_epoch),
                   "final_train_loss": row.final_train_loss, "final_val_loss": row.final_val_loss, "gap": row.gap,
                   "val_accuracy": row.val_accuracy, "chance": chance, "n_seeds": float(row.n_seeds),
                   "rise_after_best": row.final_val_loss - row.best_val_loss}
        if row.diverged:
            findings.append(Finding("diverged", (row.cell,), numbers))
        elif abs(row.val_accuracy - chance) <= thresholds.chance_margin:
            findings.append(Finding("failed_to_train", (row.cell,), numbers))
        else:
            trained.append(row)
            if row.gap > thresholds.overfit_gap:
                findings.append(Finding("overfitting", (row.cell,), numbers))
    if trained and not any(f.kind == "overfitting" for f in findings):
        widest = max(trained, key=lambda r: r.gap)
        findings.append(Finding("no_overfitting", (widest.cell,), {"gap": widest.gap,
                                                                    "threshold": thresholds.overfit_gap}))
    findings += effect_findings(pd.DataFrame(trained), thresholds)
    findings += best_model_findings(test_score, summary)
    return findings


def effect_findings(trained: pd.DataFrame, thresholds: Thresholds) -> list[Finding]:
    """Compare the mean generalisation gap across skip, BatchNorm and depth among cells that trained."""
    if trained.empty:
        return []
    min_difference = thresholds.effect_min_gap
    trained = trained.assign(has_bn=[c.bn_every is not None for c in trained["cell"]])
    out = []
    for kind, column in (("effect_of_skip", "skip"), ("effect_of_batchnorm", "has_bn"), ("effect_of_depth", "depth")):
        levels = trained.groupby(column, sort=True).agg(gap=("gap", "mean"), best_val_loss=("best_val_loss", "mean"),
                                                        n_cells=("gap", "size"))
        if len(levels) < 2:
            continue
        rows = tuple({"level": level, "gap": float(r.gap), "best_val_loss": float(r.best_val_loss),
                      "n_cells": float(r.n_cells)} for level, r in levels.iterrows())
        spread = float(levels["gap"].max() - levels["gap"].min())
        numbers = {"spread": spread, "min_difference": min_difference}
        out.append(Finding(kind, (), numbers, detail={"direction": _direction(levels["gap"], spread, min_difference)},
                           rows=rows))
    return out


def _direction(gaps: pd.Series, spread: float, min_difference: float) -> str:
    """Say how the gap moves from the first level to the last: 'increases', 'decreases', 'mixed' or 'similar'."""
    if not math.isfinite(spread) or spread < min_difference:
        return "similar"
    steps = np.diff(gaps.to_numpy())
    if np.all(steps >= 0):
        return "increases"
    if np.all(steps <= 0):
        return "decreases"
    return "mixed"


def best_model_findings(test_score: pd.DataFrame, summary: pd.DataFrame) -> list[Finding]:
    """Return the chosen model with its test accuracy, 95% interval and test loss."""
    if test_score.empty:
        return []
    row = test_score.iloc[0]
    cell = Cell.from_row(row)
    numbers = {name: float(row[name]) for name in ("test_accuracy", "ci_low", "ci_high", "test_loss", "n_test",
                                                     "epoch")}
    match = summary[summary["cell"] == cell]
    if "val_loss" in row.index:  # the chosen seed and epoch's own validation loss
        numbers["best_val_loss"] = float(row["val_loss"])
    else:
        numbers["best_val_loss"] = float(match["best_val_loss"].iloc[0]) if len(match) else math.nan
    numbers["seed"] = float(row["seed"])
    criterion = str(row["criterion"]) if "criterion" in row.index else "lowest validation loss"
    return [Finding("best_model", (cell,), numbers, detail={"criterion": criterion})]


def all_findings(tables: dict[str, pd.DataFrame], thresholds: Thresholds, chance: float = 0.5) -> list[Finding]:
    """Return every finding the tables support, gradients first."""
    return (gradient_findings(tables["gradient_metrics"], thresholds)
            + cifar_findings(tables["cells"], tables["curves"], tables["test_score"], thresholds, chance))
