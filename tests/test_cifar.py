"""Specify CIFAR training, divergence handling, model selection and the single test-set evaluation."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from resreport.cells import Cell, CellResult
from resreport.cifar import (SELECTION_RULE, cifar_cells, score_on_test, select_best_model, train_cell,
                             wilson_interval)
from resreport.config import CifarConfig
from resreport.data import CifarData
from resreport.store import normalise

N_FEATURES = 3072


def make_data(n_train: int = 96, n_val: int = 32, n_test: int = 40, seed: int = 0) -> CifarData:
    """Two Gaussian blobs in 3072 dimensions, already 'normalised': learnable in a few epochs."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(N_FEATURES, generator=generator) / N_FEATURES ** 0.5

    def blobs(n):
        y = torch.arange(n) % 2
        x = torch.randn(n, N_FEATURES, generator=generator) + (2 * y - 1).float()[:, None] * direction * 3
        return x, y

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = blobs(n_train), blobs(n_val), blobs(n_test)
    return CifarData(train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=test_x, test_y=test_y,
                     classes=("airplane", "bird"), mean=(0.5,) * 3, std=(0.25,) * 3, fingerprint="synthetic",
                     source="synthetic blobs", counts={})


def tiny_config(**overrides) -> CifarConfig:
    base = CifarConfig(depths=(3, 5), bn_every=(None, 1), use_skip=(False, True), n_hid=8, n_epochs=3,
                       batch_size=32, lr=0.01)
    return dataclasses.replace(base, **overrides)


class TestSetTripwire:
    """Stands in for data.test_x / test_y and fails on any use."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read (.{name})")

    def __len__(self):
        raise AssertionError("the test split was read (len)")


def test_cifar_cells_repeat_every_grid_cell_for_each_seed():
    cells = cifar_cells(tiny_config(n_seeds=2))
    assert len(cells) == 2 * 2 * 2 * 2
    assert [c.seed for c in cells[:2]] == [0, 1]


def test_train_cell_records_epoch_0_to_n_for_train_and_val_in_contract_tables():
    config = tiny_config()
    result = train_cell(Cell(3, 1, True, 0), config, make_data(), "cpu")
    curves = normalise(result.tables["curves"], "curves")
    cells = normalise(result.tables["cells"], "cells")
    assert sorted(set(curves["epoch"])) == [0, 1, 2, 3]
    assert (curves.groupby("epoch")["split"].apply(sorted) == pd.Series([["train", "val"]] * 4)).all()
    assert len(cells) == 1 and not cells["diverged"].iloc[0] and cells["epochs_run"].iloc[0] == 3
    val = curves[curves["split"] == "val"]
    assert cells["best_val_loss"].iloc[0] == val["loss"].min()
    assert cells["best_epoch"].iloc[0] == val.loc[val["loss"].idxmin(), "epoch"]


def test_training_lowers_the_training_loss_on_separable_data():
    result = train_cell(Cell(3, None, False, 0), tiny_config(n_epochs=5, lr=0.05), make_data(), "cpu")
    train = result.tables["curves"].query("split == 'train'").set_index("epoch")["loss"]
    assert train[5] < train[0] - 0.1


def test_train_cell_is_deterministic_per_seed_and_differs_across_seeds():
    config, data = tiny_config(), make_data()
    first = train_cell(Cell(5, 1, True, 0), config, data, "cpu").tables["curves"]
    again = train_cell(Cell(5, 1, True, 0), config, data, "cpu").tables["curves"]
    other = train_cell(Cell(5, 1, True, 1), config, data, "cpu").tables["curves"]
    pd.testing.assert_frame_equal(first, again)
    assert not first["loss"].equals(other["loss"])


def test_best_state_is_the_state_at_the_lowest_validation_loss():
    config, data = tiny_config(n_epochs=4), make_data()
    result = train_cell(Cell(3, None, True, 0), config, data, "cpu")
    scores = score_on_test(Cell(3, None, True, 0), result, config, data, "cpu")
    assert result.extra["best_state"] is not None
    assert all(t.device.type == "cpu" for t in result.extra["best_state"].values())
    assert scores["test_score"]["epoch"].iloc[0] == result.extra["best_epoch"]


def test_huge_learning_rate_diverges_without_raising_and_keeps_the_curve():
    config = tiny_config(lr=1e6, n_epochs=5)
    result = train_cell(Cell(5, None, True, 0), config, make_data(), "cpu")
    cells = result.tables["cells"].iloc[0]
    curves = result.tables["curves"]
    assert cells["diverged"]
    assert curves["epoch"].max() == cells["epochs_run"] < 5  # stopped early
    assert math.isfinite(curves.query("epoch == 0")["loss"].iloc[0])  # the curve up to divergence is kept
    assert result.extra["best_epoch"] == 0 and math.isfinite(result.extra["best_val_loss"])


def test_progress_is_called_once_per_recorded_epoch():
    calls = []
    train_cell(Cell(3, None, False, 0), tiny_config(), make_data(), "cpu",
               progress=lambda epoch, n_epochs, loss: calls.append((epoch, n_epochs)))
    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_training_and_selection_never_read_the_test_split():
    config = tiny_config(depths=(3,), bn_every=(None,))
    data = dataclasses.replace(make_data(), test_x=TestSetTripwire(), test_y=TestSetTripwire())
    results = {cell: train_cell(cell, config, data, "cpu") for cell in cifar_cells(config)}
    best = select_best_model(results)
    with pytest.raises(AssertionError, match="test split was read"):
        score_on_test(best, results[best], config, data, "cpu")


def test_score_on_test_evaluates_the_chosen_state_with_a_wilson_interval_and_confusion():
    config, data = tiny_config(), make_data()
    cell = Cell(3, 1, False, 0)
    result = train_cell(cell, config, data, "cpu")
    tables = score_on_test(cell, result, config, data, "cpu")
    score = normalise(tables["test_score"], "test_score").iloc[0]
    confusion = normalise(tables["confusion"], "confusion")
    assert score["n_test"] == 40 and confusion["count"].sum() == 40
    correct = confusion.query("true_class == predicted_class")["count"].sum()
    assert score["test_accuracy"] == correct / 40
    assert score["ci_low"] <= score["test_accuracy"] <= score["ci_high"]
    assert score["criterion"] == SELECTION_RULE


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)


def fake_result(best_val_loss: float, best_epoch: int) -> CellResult:
    return CellResult(tables={}, extra={"best_state": {"w": torch.zeros(1)}, "best_epoch": best_epoch,
                                       "best_val_loss": best_val_loss})


def test_selection_takes_the_lowest_validation_loss_and_never_a_diverged_cell():
    results = {Cell(3, None, False, 0): fake_result(0.5, 4),
               Cell(5, None, True, 0): fake_result(0.3, 7),
               Cell(10, None, True, 0): fake_result(math.nan, 0),
               Cell(20, None, True, 0): CellResult(tables={}, extra={"best_state": None, "best_epoch": None,
                                                                     "best_val_loss": math.nan})}
    assert select_best_model(results) == Cell(5, None, True, 0)


def test_selection_ties_go_to_fewer_layers_then_earlier_epoch_whatever_the_order():
    tied = {Cell(10, 1, True, 0): fake_result(0.4, 2),
            Cell(5, 1, True, 0): fake_result(0.4, 9),
            Cell(5, None, False, 1): fake_result(0.4, 3)}
    assert select_best_model(tied) == Cell(5, None, False, 1)
    assert select_best_model(dict(reversed(list(tied.items())))) == Cell(5, None, False, 1)


def test_selection_refuses_when_no_cell_has_a_finite_validation_loss():
    with pytest.raises(ValueError, match="finite validation loss"):
        select_best_model({Cell(3, None, False, 0): fake_result(math.inf, 0)})


def literal_loop_val_losses(cell: Cell, config: CifarConfig, data: CifarData) -> list[float]:
    """Train the textbook way (TensorDataset, DataLoader, per-batch loss) from the same init and batch order."""
    from torch.utils.data import DataLoader, TensorDataset

    from resreport.cifar import build_model, cell_seed

    model = build_model(cell, config, N_FEATURES, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    generator = torch.Generator().manual_seed(cell_seed(config, cell, "batches"))
    train_set = TensorDataset(data.train_x, data.train_y)

    def val_loss():
        model.eval()
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(data.val_x), data.val_y).item()

    losses = [val_loss()]
    for _ in range(config.n_epochs):
        model.train()
        order = torch.randperm(len(train_set), generator=generator).tolist()  # one permutation per epoch
        for x, y in DataLoader(torch.utils.data.Subset(train_set, order), batch_size=config.batch_size):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        losses.append(val_loss())
    return losses


def test_train_cell_matches_the_literal_dataloader_loop():
    config, data, cell = tiny_config(), make_data(), Cell(5, 1, True, 0)
    curves = train_cell(cell, config, data, "cpu").tables["curves"]
    ours = curves.query("split == 'val'").sort_values("epoch")["loss"].tolist()
    assert ours == pytest.approx(literal_loop_val_losses(cell, config, data), abs=1e-5)
