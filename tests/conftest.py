"""A tiny, hand-made but complete results folder: every contract table, manifest.json and changes.json."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from resreport.config import CifarConfig, Config, GradientConfig
from resreport.store import write_json, write_table

AUTOCORR_LAGS = range(1, 9)

# (depth, bn_every, skip) -> (mean_abs_grad, ratio_to_depth2, nonfinite_fraction, lag1_autocorr) per protocol.
SEED_METRICS = {
    (2, None, False): (1.0, 1.0, 0.0, 0.99),
    (5, None, False): (0.1, 0.1, 0.0, 0.95),
    (10, None, False): (1e-4, 1e-4, 0.0, 0.97),  # vanishing: 1e-4 ** (1/8) = 0.316 per layer
    (2, 3, False): (1.0, 1.0, 0.0, 0.98),
    (5, 3, False): (0.8, 0.8, 0.0, 0.30),  # shattering
    (10, 3, False): (1e-9, 1e-9, 0.0, 0.01),  # BatchNorm after layer 9 precedes the output: artefact
    (2, None, True): (1.0, 1.0, 0.0, 0.99),
    (5, None, True): (50.0, 50.0, 0.0, 0.95),
    (10, None, True): (3e5, 3e5, 0.25, math.nan),  # overflow: exploding (mean over the finite values)
    (2, 3, True): (1.0, 1.0, 0.0, 0.99),
    (5, 3, True): (3.0, 3.0, 0.0, 0.92),  # healthy
    (10, 3, True): (0.0, 0.0, 0.0, math.nan),  # artefact, exactly zero
}
PER_SAMPLE_CHANGES = {
    (10, 3, False): (0.5, 0.5, 0.0, 0.20),
    (10, 3, True): (2.0, 2.0, 0.0, 0.93),
}

# (depth, bn_every, skip) -> (final train loss, best val loss, best epoch, final val loss, val accuracy, diverged)
CIFAR_CELLS = {
    (3, None, False): (0.40, 0.44, 4, 0.45, 0.80, False),
    (3, None, True): (0.10, 0.35, 2, 0.60, 0.82, False),  # overfits
    (3, 1, False): (0.69, 0.69, 1, 0.69, 0.51, False),  # near chance: failed to train
    (3, 1, True): (math.nan, 0.69, 0, math.nan, 0.50, True),  # diverged
    (5, None, False): (0.30, 0.40, 3, 0.45, 0.78, False),
    (5, None, True): (0.12, 0.38, 2, 0.42, 0.80, False),
    (5, 1, False): (0.43, 0.45, 4, 0.45, 0.75, False),
    (5, 1, True): (0.15, 0.30, 2, 0.35, 0.84, False),  # lowest validation loss: the best model
}
N_EPOCHS = 4
SEEDS = (0, 1)


def gradient_metrics_table(overrides: dict | None = None) -> pd.DataFrame:
    """Return the tidy gradient_metrics table for both protocols; overrides replace per_sample and seed rows."""
    rows = []
    for protocol in ("seed", "per_sample"):
        values = dict(SEED_METRICS)
        if protocol == "per_sample":
            values.update(PER_SAMPLE_CHANGES)
        values.update(overrides or {})
        for (depth, bn_every, skip), (mean, ratio, nonfinite, autocorr) in values.items():
            metrics = {"mean_abs_grad": mean, "median_abs_grad": mean * 0.8, "ratio_to_depth2": ratio,
                       "nonfinite_fraction": nonfinite, "lag1_autocorr": autocorr,
                       "lag1_autocorr_of_mean": min(1.0, autocorr + 0.05) if math.isfinite(autocorr) else math.nan,
                       "sign_changes_per_unit": (1 - autocorr) * 10 if math.isfinite(autocorr) else math.nan}
            metrics.update({f"autocorr_lag_{k}": autocorr ** k for k in AUTOCORR_LAGS})
            rows += [(depth, bn_every, skip, protocol, name, value) for name, value in metrics.items()]
    return pd.DataFrame(rows, columns=["depth", "bn_every", "skip", "protocol", "metric", "value"])


def gradients_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Return two initialisations' curves on 16 points per cell, scaled to each cell's mean |gradient|."""
    x = np.linspace(-3, 3, 16)
    rng = np.random.default_rng(0)
    rows = []
    wide = metrics.pivot_table(index=["depth", "bn_every", "skip", "protocol"], columns="metric", values="value",
                               dropna=False).reset_index()
    for cell in wide.itertuples(index=False):
        for init in range(2):
            shape = np.cos(x) + (1 - np.nan_to_num(cell.lag1_autocorr)) * rng.normal(size=x.size)
            grad = shape * cell.mean_abs_grad
            if cell.nonfinite_fraction > 0:  # the overflowing tail of an exploding cell
                grad[x > 1.5] = np.inf
            rows += [(cell.depth, cell.bn_every, cell.skip, cell.protocol, init, xi, gi) for xi, gi in zip(x, grad)]
    return pd.DataFrame(rows, columns=["depth", "bn_every", "skip", "protocol", "init", "x", "grad"])


def cifar_tables() -> dict[str, pd.DataFrame]:
    """Return curves and cells consistent with CIFAR_CELLS, two seeds a little apart."""
    curves, cells = [], []
    for (depth, bn_every, skip), (train_end, best, best_epoch, val_end, accuracy, diverged) in CIFAR_CELLS.items():
        for seed in SEEDS:
            shift = 0.01 * seed
            for epoch in range(N_EPOCHS + 1):
                t = epoch / N_EPOCHS
                train = 0.69 + (train_end - 0.69) * t if not diverged else (0.69 if epoch == 0 else math.nan)
                val = 0.69 + (best - 0.69) * min(1.0, epoch / max(best_epoch, 1))
                if epoch > best_epoch:
                    val = best + (val_end - best) * (epoch - best_epoch) / (N_EPOCHS - best_epoch)
                val = val if not diverged or epoch == 0 else math.nan
                val_accuracy = 0.5 + (accuracy - 0.5) * min(1.0, epoch / max(best_epoch, 1))
                curves.append((depth, bn_every, skip, seed, epoch, "train", train + shift, val_accuracy + 0.02))
                curves.append((depth, bn_every, skip, seed, epoch, "val", val + shift, val_accuracy))
            cells.append((depth, bn_every, skip, seed, best_epoch, best + shift, train_end + shift, diverged, 1.5,
                          val_end + shift, accuracy))
    return {
        "curves": pd.DataFrame(curves, columns=["depth", "bn_every", "skip", "seed", "epoch", "split", "loss",
                                                "accuracy"]),
        "cells": pd.DataFrame(cells, columns=["depth", "bn_every", "skip", "seed", "best_epoch", "best_val_loss",
                                              "final_train_loss", "diverged", "seconds", "final_val_loss",
                                              "best_val_accuracy"]),
    }


def fixture_config() -> Config:
    """Return the config whose grids the hand-made tables cover."""
    return Config(gradients=GradientConfig(depths=(2, 5, 10), bn_every=(None, 3), n_inits=2, n_points=16),
                  cifar=CifarConfig(depths=(3, 5), bn_every=(None, 1), n_epochs=N_EPOCHS, n_seeds=2))


def write_results(results_dir, *, metric_overrides: dict | None = None, changes: dict | None = None) -> None:
    """Write every contract table, manifest.json and (if given) changes.json into results_dir."""
    metrics = gradient_metrics_table(metric_overrides)
    write_table(metrics, results_dir, "gradient_metrics")
    write_table(gradients_table(metrics), results_dir, "gradients")
    for name, frame in cifar_tables().items():
        write_table(frame, results_dir, name)
    write_table(pd.DataFrame([(5, 1, True, 0, 2, 0.39, 0.83, 0.81, 0.85, 2000, "lowest validation loss")],
                             columns=["depth", "bn_every", "skip", "seed", "epoch", "test_loss", "test_accuracy",
                                      "ci_low", "ci_high", "n_test", "criterion"]), results_dir, "test_score")
    write_table(pd.DataFrame([("airplane", "airplane", 830), ("airplane", "bird", 170), ("bird", "airplane", 170),
                              ("bird", "bird", 830)], columns=["true_class", "predicted_class", "count"]),
                results_dir, "confusion")
    write_json(results_dir / "manifest.json", {
        "created": "2026-12-04T15:00:00+00:00", "config": dataclasses.asdict(fixture_config()),
        "fingerprints": {"code": {"gradients": "abc123", "cifar": "def456"}, "data": "feedbeef"},
        "data_source": "/data/cifar10-jpeg (ImageFolder)", "packages": {"python": "3.11.9", "pandas": "2.2.3"},
        "device": "cpu", "git_commit": "0123456789abcdef+dirty", "timings": {"gradients": 12.5, "cifar": 40.0},
        "cells": {"gradients": {"computed": 12, "cached": 0, "failed": 0}},
        "conventions": {"constant_curve": "A constant curve has autocorrelation 1 by convention."},
    })
    if changes is not None:
        write_json(results_dir / "changes.json", changes)


@pytest.fixture
def results_dir(tmp_path):
    """A results folder holding the hand-made tables, with a changes.json that has something moved."""
    folder = tmp_path / "results"
    write_results(folder, changes={"previous_build": "2026-12-03T10:00:00+00:00", "rtol": 0.05,
                                   "added": ["cells: depth 5, BN every 1, skip, seed 1"], "removed": [],
                                   "moved": [{"table": "cells", "cell": "depth 3, no BN, skip, seed 0",
                                              "metric": "best_val_loss", "before": 0.40, "after": 0.35}]})
    return folder


@pytest.fixture
def config():
    return fixture_config()


@pytest.fixture(scope="session")
def rendered_report(tmp_path_factory):
    """Render the hand-made results once: (out_dir, render_report's answer)."""
    from resreport.render import render_report

    root = tmp_path_factory.mktemp("rendered")
    write_results(root / "results", changes={"previous_build": "2026-12-03T10:00:00+00:00", "rtol": 0.05,
                                             "added": [], "removed": [], "moved": []})
    return root, render_report(root / "results", root, fixture_config())
