"""Time render_report on synthetic results shaped like the lab's full grids (the issue's goal: at most 10 s).

    .venv/bin/python benchmarks/bench_render.py              # 1 warm-up, then 3 timed renders
    .venv/bin/python benchmarks/bench_render.py --repeats 1

The tables have the seed-scale sizes (gradients: 60 cells x 2 protocols x 30 initialisations x 256 points;
CIFAR: 40 cells x 21 epochs) with made-up values that exercise every finding kind and figure annotation
(overflow, zeros by construction, shattering). Rendering has no reference loop to compare with, so the script
prints seconds per step and the ratio to the 10 s goal. Never imports torch.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resreport.config import Config  # noqa: E402
from resreport.findings import batchnorm_precedes_output  # noqa: E402
from resreport.render import render_report  # noqa: E402
from resreport.store import write_json, write_table  # noqa: E402

GOAL_SECONDS = 10.0


def gradient_tables(config: Config, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return gradients and gradient_metrics for every cell of the gradient grid."""
    grid = config.gradients
    x = np.linspace(grid.x_min, grid.x_max, grid.n_points)
    curves, metrics = [], []
    for depth in grid.depths:
        for bn_every in grid.bn_every:
            for skip in grid.use_skip:
                for protocol in ("seed", "per_sample"):
                    scale = 1.3 ** depth if skip else 0.5 ** depth
                    noise = 0.1 if bn_every is None else min(1.0, 0.05 * depth / bn_every)
                    grad = scale * (np.cos(x) + noise * rng.normal(size=(grid.n_inits, x.size)))
                    if skip and depth >= 50 and bn_every is None:
                        grad[:, ::3] = np.inf  # float32 overflow
                    if protocol == "seed" and batchnorm_precedes_output(depth, bn_every):
                        grad *= 1e-9  # zero by construction, up to rounding
                    curves.append(pd.DataFrame({
                        "depth": depth, "bn_every": bn_every, "skip": skip, "protocol": protocol,
                        "init": np.repeat(np.arange(grid.n_inits), x.size), "x": np.tile(x, grid.n_inits),
                        "grad": grad.ravel().astype("float32")}))
                    finite = np.isfinite(grad)
                    mean = float(np.abs(grad).mean()) if finite.all() else math.inf
                    autocorr = max(-1.0, 1 - 2 * noise)
                    depth2_scale = 1.3 ** 2 if skip else 0.5 ** 2
                    values = {"mean_abs_grad": mean, "median_abs_grad": mean, "ratio_to_depth2": mean / depth2_scale,
                              "nonfinite_fraction": 1 - finite.mean(), "lag1_autocorr": autocorr,
                              "lag1_autocorr_of_mean": min(1.0, autocorr + 0.1), "sign_changes_per_unit": 10 * noise,
                              **{f"autocorr_lag_{k}": autocorr ** k for k in range(1, grid.max_lag + 1)}}
                    metrics += [(depth, bn_every, skip, protocol, name, value) for name, value in values.items()]
    return (pd.concat(curves, ignore_index=True),
            pd.DataFrame(metrics, columns=["depth", "bn_every", "skip", "protocol", "metric", "value"]))


def cifar_tables(config: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return curves and cells for every cell of the CIFAR grid, one seed."""
    epochs = np.arange(config.cifar.n_epochs + 1)
    curves, cells = [], []
    for depth in config.cifar.depths:
        for bn_every in config.cifar.bn_every:
            for skip in config.cifar.use_skip:
                train = 0.69 * np.exp(-epochs / (6 + depth / 4))
                val = 0.69 - 0.25 * (1 - np.exp(-epochs / 3)) + 0.004 * epochs * (1 + skip)
                accuracy = 0.5 + 0.35 * (1 - np.exp(-epochs / 3))
                for e in epochs:
                    curves += [(depth, bn_every, skip, 0, e, "train", train[e], accuracy[e] + 0.05),
                               (depth, bn_every, skip, 0, e, "val", val[e], accuracy[e])]
                best = int(np.argmin(val))
                cells.append((depth, bn_every, skip, 0, best, val[best], train[-1], False, 10.0, val[-1],
                              accuracy[best]))
    return (pd.DataFrame(curves, columns=["depth", "bn_every", "skip", "seed", "epoch", "split", "loss", "accuracy"]),
            pd.DataFrame(cells, columns=["depth", "bn_every", "skip", "seed", "best_epoch", "best_val_loss",
                                         "final_train_loss", "diverged", "seconds", "final_val_loss",
                                         "best_val_accuracy"]))


def write_seed_scale_results(results_dir: Path, config: Config) -> None:
    """Write every contract table and a manifest with the seed-scale grid sizes."""
    gradients, metrics = gradient_tables(config, np.random.default_rng(0))
    write_table(gradients, results_dir, "gradients")
    write_table(metrics, results_dir, "gradient_metrics")
    curves, cells = cifar_tables(config)
    write_table(curves, results_dir, "curves")
    write_table(cells, results_dir, "cells")
    write_table(pd.DataFrame([(5, 1, True, 0, 7, 0.39, 0.83, 0.81, 0.85, 2000)],
                             columns=["depth", "bn_every", "skip", "seed", "epoch", "test_loss", "test_accuracy",
                                      "ci_low", "ci_high", "n_test"]), results_dir, "test_score")
    write_table(pd.DataFrame([("airplane", "airplane", 830), ("airplane", "bird", 170), ("bird", "airplane", 170),
                              ("bird", "bird", 830)], columns=["true_class", "predicted_class", "count"]),
                results_dir, "confusion")
    write_json(results_dir / "manifest.json", {
        "created": "2026-01-01T00:00:00+00:00", "config": dataclasses.asdict(config),
        "fingerprints": {"code": {}, "data": None}, "data_source": "synthetic (benchmarks/bench_render.py)",
        "packages": {}, "device": "cpu", "git_commit": "n/a", "timings": {}, "cells": {}, "conventions": {}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = Config()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        write_seed_scale_results(out / "results", config)
        render_report(out / "results", out, config)  # warm-up: font cache, imports
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            answer = render_report(out / "results", out, config)
            runs.append((time.perf_counter() - start, answer["seconds"]))
    total = statistics.median(seconds for seconds, _ in runs)
    steps = {name: statistics.median(step[name] for _, step in runs) for name in runs[0][1]}
    print(f"render_report, seed-scale synthetic results, median of {args.repeats}: {total:.2f} s "
          f"({', '.join(f'{k} {v:.2f} s' for k, v in steps.items())})")
    print(f"ratio to the {GOAL_SECONDS:.0f} s goal: {total / GOAL_SECONDS:.2f}")


if __name__ == "__main__":
    main()
