"""Summarise input-gradient curves (n_inits, n_points) into per-cell metrics.

A curve whose variance along x is at most 1e-10 of its mean square, or that holds a non-finite value,
has no defined autocorrelation: it is left out of the average over initialisations, and a cell where no
curve has one reports NaN.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

CONSTANT_RTOL = 1e-10  # a curve is constant when var <= CONSTANT_RTOL * mean square (all-zero included)
CONSTANT_CURVE_CONVENTION = (
    f"A gradient curve whose variance along x is at most {CONSTANT_RTOL:g} of its mean square (a depth-2 net "
    "is linear in x, so its curve is constant) or that holds a non-finite value has no defined "
    "autocorrelation: it is left out of the average over initialisations, and a cell where no curve has one "
    "reports NaN."
)
BASELINE_DEPTH = 2  # ratio_to_depth2 divides by the depth-2 cell with the same bn_every, skip and protocol
GROUP_COLUMNS = ["bn_every", "skip", "protocol"]


def metric_names(max_lag: int = 8) -> list[str]:
    """Return every metric name a cell reports, in table order."""
    return (["mean_abs_grad", "median_abs_grad", "ratio_to_depth2", "nonfinite_fraction", "lag1_autocorr",
             "lag1_autocorr_of_mean"] + [f"autocorr_lag_{lag}" for lag in range(1, max_lag + 1)]
            + ["sign_changes_per_unit"])


METRIC_NAMES = metric_names()


def mean_abs_grad(grads: np.ndarray) -> float:
    """Return the mean |gradient| over the finite values (NaN when none is finite)."""
    finite = np.abs(_finite_values(grads))
    return float(finite.mean()) if finite.size else float("nan")


def median_abs_grad(grads: np.ndarray) -> float:
    """Return the median |gradient| over the finite values (NaN when none is finite)."""
    finite = np.abs(_finite_values(grads))
    return float(np.median(finite)) if finite.size else float("nan")


def nonfinite_fraction(grads: np.ndarray) -> float:
    """Return the fraction of gradient values that are inf or NaN."""
    grads = np.asarray(grads)
    return float(np.mean(~np.isfinite(grads))) if grads.size else float("nan")


def curve_autocorr(grads: np.ndarray, lag: int) -> np.ndarray:
    """Return each curve's sample autocorrelation at lag along x, NaN where undefined; shape (n_inits,)."""
    curves = np.atleast_2d(np.asarray(grads, dtype=np.float64))
    finite = np.isfinite(curves).all(axis=1)
    safe = np.where(finite[:, None], curves, 0.0)  # keep inf out of the arithmetic; those rows become NaN
    centred = safe - safe.mean(axis=1, keepdims=True)
    sum_squares = (centred ** 2).sum(axis=1)
    mean_square = (safe ** 2).mean(axis=1)
    constant = sum_squares / curves.shape[1] <= CONSTANT_RTOL * mean_square
    defined = finite & ~constant
    products = (centred[:, :-lag] * centred[:, lag:]).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(defined, products / np.where(defined, sum_squares, 1.0), np.nan)


def autocorr_lag(grads: np.ndarray, lag: int) -> float:
    """Return the mean over initialisations of each curve's autocorrelation at lag (undefined curves left out)."""
    return _mean_defined(curve_autocorr(grads, lag))


def lag1_autocorr(grads: np.ndarray) -> float:
    """Return the mean over initialisations of each curve's lag-1 autocorrelation along x."""
    return autocorr_lag(grads, 1)


def lag1_autocorr_of_mean(grads: np.ndarray) -> float:
    """Return the lag-1 autocorrelation of the mean curve over the initialisations whose curves are finite."""
    curves = np.atleast_2d(np.asarray(grads, dtype=np.float64))
    finite_curves = curves[np.isfinite(curves).all(axis=1)]
    if not len(finite_curves):
        return float("nan")
    return float(curve_autocorr(finite_curves.mean(axis=0), 1)[0])


def sign_changes_per_unit(grads: np.ndarray, x_span: float) -> float:
    """Return sign changes per unit of x (consecutive points of strictly opposite sign), averaged over finite curves."""
    curves = np.atleast_2d(np.asarray(grads, dtype=np.float64))
    finite_curves = curves[np.isfinite(curves).all(axis=1)]
    if not len(finite_curves):
        return float("nan")
    signs = np.sign(finite_curves)
    changes = (signs[:, :-1] * signs[:, 1:] < 0).sum(axis=1)  # (n_finite,)
    return float(changes.mean() / x_span)


def cell_metrics(grads: np.ndarray, x_span: float, max_lag: int) -> dict[str, float]:
    """Return every per-cell metric except ratio_to_depth2 (it needs the depth-2 cell)."""
    metrics = {
        "mean_abs_grad": mean_abs_grad(grads),
        "median_abs_grad": median_abs_grad(grads),
        "nonfinite_fraction": nonfinite_fraction(grads),
        "lag1_autocorr": lag1_autocorr(grads),
        "lag1_autocorr_of_mean": lag1_autocorr_of_mean(grads),
    }
    for lag in range(1, max_lag + 1):
        metrics[f"autocorr_lag_{lag}"] = autocorr_lag(grads, lag)
    metrics["sign_changes_per_unit"] = sign_changes_per_unit(grads, x_span)
    return metrics


def add_ratio_to_depth2(metrics: pd.DataFrame) -> pd.DataFrame:
    """Append ratio_to_depth2 rows: mean_abs_grad over the depth-2 cell's (same bn_every, skip, protocol)."""
    mean_abs = metrics[metrics["metric"] == "mean_abs_grad"].copy()
    mean_abs["_group"] = _group_key(mean_abs)
    baseline = mean_abs[mean_abs["depth"] == BASELINE_DEPTH].set_index("_group")["value"]
    baseline = baseline.where(baseline != 0)  # a zero baseline gives NaN, not inf
    ratios = mean_abs.assign(metric="ratio_to_depth2",
                             value=mean_abs["value"].to_numpy() / mean_abs["_group"].map(baseline).to_numpy())
    ratios = ratios.drop(columns="_group")
    return pd.concat([metrics, ratios], ignore_index=True)


def _group_key(frame: pd.DataFrame) -> pd.Series:
    """Return a hashable key per row from bn_every (nullable), skip and protocol."""
    bn = frame["bn_every"].astype("object").where(frame["bn_every"].notna(), None)
    return pd.Series(list(zip(bn, frame["skip"].astype(bool), frame["protocol"])), index=frame.index)


def _finite_values(grads: np.ndarray) -> np.ndarray:
    grads = np.asarray(grads, dtype=np.float64)
    return grads[np.isfinite(grads)]


def _mean_defined(values: np.ndarray) -> float:
    """Return the mean of the non-NaN values, NaN when there are none (no empty-slice warning)."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")
