"""Train the CIFAR grid on training/validation data, choose one model by validation loss, score it on test.

The test split is read in exactly one place, score_on_test; training and selection see only
training_splits(data), which hands out the training and validation tensors and nothing else.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F

from resreport.cells import Cell, CellResult, grid_cells
from resreport.config import CifarConfig
from resreport.data import CifarData
from resreport.layout import batchnorm_after
from resreport.models import MyNet

log = logging.getLogger(__name__)

EVAL_BATCH = 2048  # rows per no-grad forward pass: activations stay in cache, GEMMs at full speed
WILSON_Z = 1.959963984540054  # two-sided 95% normal quantile
SELECTION_RULE = ("lowest validation loss over every cell, seed and epoch 0..n_epochs; ties: fewer layers, then "
                  "earlier epoch, then fewer BatchNorm layers, then no skip, then lower seed; diverged "
                  "(non-finite) losses never chosen")


def cifar_cells(config: CifarConfig) -> list[Cell]:
    """Return the grid's cells, each repeated for seeds 0..n_seeds-1, in the lab's loop order."""
    return grid_cells(config.depths, config.bn_every, config.use_skip, seeds=tuple(range(config.n_seeds)))


def cell_seed(config: CifarConfig, cell: Cell, purpose: str) -> int:
    """Derive a 63-bit seed from the config seed, the cell and a purpose ('init' or 'batches')."""
    text = f"{config.seed}|{cell.cell_id}|{purpose}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def build_model(cell: Cell, config: CifarConfig, n_in: int, n_out: int) -> MyNet:
    """Build the cell's MyNet with PyTorch's default init drawn from the cell's own seed (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cell_seed(config, cell, "init"))
        return MyNet(n_in, config.n_hid, n_out, cell.depth, cell.bn_every, cell.use_skip)


def training_splits(data: CifarData, device: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return {'train': (x, y), 'val': (x, y)} on device: everything training and selection may see."""
    return {"train": (data.train_x.to(device), data.train_y.to(device)),
            "val": (data.val_x.to(device), data.val_y.to(device))}


def train_cell(cell: Cell, config: CifarConfig, data: CifarData, device: str,
               progress: Callable[[int, int, float], None] | None = None) -> CellResult:
    """Train one cell's net, record per-epoch curves, keep the best state by validation loss; never raise on NaN."""
    start = time.perf_counter()
    splits = training_splits(data, device)
    train_x = splits["train"][0]
    model = build_model(cell, config, train_x.shape[1], len(data.classes)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    generator = torch.Generator().manual_seed(cell_seed(config, cell, "batches"))
    batch_buffer = torch.empty((config.batch_size, train_x.shape[1]), dtype=train_x.dtype, device=device)
    rows: list[dict] = []
    best = {"epoch": None, "val_loss": math.inf, "val_accuracy": math.nan, "state": None}
    diverged = False
    for epoch in range(config.n_epochs + 1):
        batch_loss = math.nan if epoch == 0 else train_one_epoch(model, optimizer, splits["train"], config.batch_size,
                                                                   generator, batch_buffer)
        metrics = evaluate_splits(model, splits)
        rows += [{**cell.columns(), "epoch": epoch, "split": split, "loss": loss, "accuracy": accuracy}
                 for split, (loss, accuracy) in metrics.items()]
        if progress is not None:
            progress(epoch, config.n_epochs, metrics["train"][0])
        val_loss = metrics["val"][0]
        if math.isfinite(val_loss) and val_loss < best["val_loss"]:  # strict: the earlier epoch wins a tie
            best = {"epoch": epoch, "val_loss": val_loss, "val_accuracy": metrics["val"][1],
                    "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
        if epoch > 0 and not (math.isfinite(batch_loss) and math.isfinite(metrics["train"][0])):
            diverged = True
            log.info("%s diverged at epoch %d (training loss %s)", cell.label, epoch, metrics["train"][0])
            break
    curves = pd.DataFrame(rows)
    summary = summarise_cell(cell, curves, best, diverged, time.perf_counter() - start)
    return CellResult(tables={"curves": curves, "cells": summary},
                      extra={"best_state": best["state"], "best_epoch": best["epoch"],
                             "best_val_loss": best["val_loss"] if best["state"] is not None else math.nan})


def train_one_epoch(model: MyNet, optimizer: torch.optim.Optimizer, train: tuple[torch.Tensor, torch.Tensor],
                    batch_size: int, generator: torch.Generator, batch_buffer: torch.Tensor) -> float:
    """Run one pass of SGD over a seeded permutation of the training split; return the mean batch loss."""
    train_x, train_y = train
    n = len(train_x)
    order = torch.randperm(n, generator=generator).to(train_x.device)
    model.train()
    loss_sum = torch.zeros((), device=train_x.device)  # summed on device: one sync per epoch, not per batch
    for begin in range(0, n, batch_size):
        index = order[begin:begin + batch_size]
        if len(index) < 2 and begin > 0:
            break  # BatchNorm cannot train on a single row; drop a lone leftover image
        batch_x = torch.index_select(train_x, 0, index, out=batch_buffer[:len(index)])  # (batch, 3072), no alloc
        loss = F.cross_entropy(model(batch_x), train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(index)
    return float(loss_sum) / n


def evaluate_splits(model: MyNet, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, tuple[float, float]]:
    """Return {split: (mean cross-entropy, accuracy)} in eval mode over each full split, with one sync."""
    model.eval()
    totals = []
    with torch.inference_mode():
        for x, y in splits.values():
            loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
            correct = torch.zeros((), device=x.device, dtype=torch.float64)
            for begin in range(0, len(x), EVAL_BATCH):
                logits = model(x[begin:begin + EVAL_BATCH])
                target = y[begin:begin + EVAL_BATCH]
                loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
                correct += (logits.argmax(1) == target).sum().double()
            totals += [loss_sum / len(x), correct / len(x)]
    values = torch.stack(totals).tolist()
    return {split: (values[2 * i], values[2 * i + 1]) for i, split in enumerate(splits)}


def summarise_cell(cell: Cell, curves: pd.DataFrame, best: dict, diverged: bool, seconds: float) -> pd.DataFrame:
    """Return the cell's one-row summary for the `cells` table."""
    last = curves[curves["epoch"] == curves["epoch"].max()].set_index("split")
    row = {**cell.columns(),
           "best_epoch": best["epoch"],
           "best_val_loss": best["val_loss"] if best["state"] is not None else math.nan,
           "final_train_loss": last.loc["train", "loss"],
           "diverged": diverged,
           "seconds": seconds,
           "final_val_loss": last.loc["val", "loss"],
           "final_train_accuracy": last.loc["train", "accuracy"],
           "final_val_accuracy": last.loc["val", "accuracy"],
           "best_val_accuracy": best["val_accuracy"],  # validation accuracy at best_epoch
           "epochs_run": int(curves["epoch"].max())}
    return pd.DataFrame([row])


def selection_key(cell: Cell, result: CellResult) -> tuple:
    """Order candidates by SELECTION_RULE: loss, depth, epoch, BatchNorm layers, skip, seed."""
    return (result.extra["best_val_loss"], cell.depth, result.extra["best_epoch"],
            len(batchnorm_after(cell.depth, cell.bn_every)), cell.bn_every or 0, cell.use_skip, cell.seed or 0)


def select_best_model(results: dict[Cell, CellResult]) -> Cell:
    """Return the cell whose kept state has the lowest validation loss (SELECTION_RULE); no test data involved."""
    candidates = {cell: result for cell, result in results.items()
                  if result.extra.get("best_state") is not None and math.isfinite(result.extra["best_val_loss"])}
    if not candidates:
        raise ValueError(f"none of the {len(results)} CIFAR cells has a finite validation loss to select on")
    return min(candidates, key=lambda cell: selection_key(cell, candidates[cell]))


def score_on_test(cell: Cell, result: CellResult, config: CifarConfig, data: CifarData,
                  device: str) -> dict[str, pd.DataFrame]:
    """Score the chosen cell's best state once on the test split: loss, accuracy, Wilson 95% CI, confusion."""
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)  # the only read of the test split
    model = build_model(cell, config, test_x.shape[1], len(data.classes))
    model.load_state_dict(result.extra["best_state"])
    model.to(device).eval()
    with torch.inference_mode():
        logits = torch.cat([model(test_x[begin:begin + EVAL_BATCH]) for begin in range(0, len(test_x), EVAL_BATCH)])
        loss = float(F.cross_entropy(logits, test_y, reduction="sum").double()) / len(test_y)
        predicted = logits.argmax(1)
    n_test = len(test_y)
    n_correct = int((predicted == test_y).sum())
    ci_low, ci_high = wilson_interval(n_correct, n_test)
    score = {**cell.columns(), "epoch": result.extra["best_epoch"], "test_loss": loss,
             "test_accuracy": n_correct / n_test, "ci_low": ci_low, "ci_high": ci_high, "n_test": n_test,
             "val_loss": result.extra["best_val_loss"],
             "val_accuracy": float(result.tables["cells"]["best_val_accuracy"].iloc[0]),
             "criterion": SELECTION_RULE}
    return {"test_score": pd.DataFrame([score]),
            "confusion": confusion_table(test_y.cpu(), predicted.cpu(), data.classes)}


def wilson_interval(n_success: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Return the Wilson score interval for a binomial proportion."""
    p = n_success / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def confusion_table(true: torch.Tensor, predicted: torch.Tensor, classes: tuple[str, ...]) -> pd.DataFrame:
    """Return one row per (true class, predicted class) with its count, zeros included."""
    n = len(classes)
    counts = torch.bincount(true * n + predicted, minlength=n * n).view(n, n)  # (true, predicted)
    return pd.DataFrame([{"true_class": classes[t], "predicted_class": classes[p], "count": int(counts[t, p])}
                         for t in range(n) for p in range(n)])
