"""Check both gradient protocols, and that the fast path equals the lab's per-model loop."""
import dataclasses
import itertools

import numpy as np
import pytest
import torch

from resreport import gradients, stacked
from resreport.cells import Cell
from resreport.config import GradientConfig
from resreport.models import MyNet
from resreport.store import TABLE_COLUMNS

SMALL = GradientConfig(depths=(2, 3, 5), bn_every=(None, 1, 2), n_inits=3, n_points=32, n_hid=16)
SMALL_CELLS = [Cell(*key) for key in itertools.product(SMALL.depths, SMALL.bn_every, SMALL.use_skip)]


@pytest.fixture
def float64():
    """Run the test with float64 as torch's default dtype (nets, inputs, draws), then restore it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def relative_error(fast: dict, literal: dict) -> float:
    """Return max |fast - literal| over both protocols, relative to each init's largest |grad| of either protocol."""
    scale = np.maximum(np.abs(literal["seed"]).max(1), np.abs(literal["per_sample"]).max(1))[:, None]  # (n_inits, 1)
    return max(float((np.abs(np.asarray(fast[p]) - literal[p]) / scale).max()) for p in gradients.PROTOCOLS)


@pytest.mark.parametrize("cell", SMALL_CELLS, ids=lambda cell: cell.cell_id)
def test_vectorised_gradients_equal_the_per_model_loop(cell, float64):
    # float64: in float32 the lab's SGD step on 10 points through BatchNorm (near-dead units, rstd up to 316)
    # amplifies rounding to ~1e-2 in no-skip BatchNorm nets, so exact maths is checked in float64.
    literal = gradients.literal_gradient_cell(cell, SMALL)
    fast = {p: g.numpy() for p, g in gradients.vectorised_gradients(cell, SMALL, "cpu").items()}
    assert relative_error(fast, literal) < 1e-9


@pytest.mark.parametrize("cell", [Cell(5, None, False), Cell(5, None, True), Cell(5, 2, True), Cell(3, 1, True)],
                         ids=lambda cell: cell.cell_id)
def test_vectorised_gradients_equal_the_per_model_loop_in_float32(cell):
    literal = gradients.literal_gradient_cell(cell, SMALL)
    fast = {p: g.numpy() for p, g in gradients.vectorised_gradients(cell, SMALL, "cpu").items()}
    assert relative_error(fast, literal) < 1e-4


@pytest.mark.parametrize("cell", [Cell(5, 1, False), Cell(5, 2, False), Cell(4, 1, True)], ids=lambda c: c.cell_id)
def test_stacked_gradient_pass_equals_autograd_on_the_same_trained_nets_in_float32(cell):
    torch.manual_seed(0)
    nets = [MyNet(1, 16, 1, cell.depth, cell.bn_every, cell.use_skip) for _ in range(3)]
    for net in nets:
        gradients.train_one_epoch(net)
    x = gradients.input_points(SMALL)
    literal = {"seed": np.stack([gradients.seed_gradient(net, x).numpy() for net in nets]),
               "per_sample": np.stack([gradients.per_sample_gradient(net, x).numpy() for net in nets])}
    fast = stacked.input_gradients_stacked(stacked.stack_nets(nets), x[:, 0])
    assert relative_error({p: g.numpy() for p, g in fast.items()}, literal) < 1e-4


@pytest.mark.parametrize("cell", [Cell(2, None, False), Cell(5, 2, True), Cell(4, 1, False)], ids=lambda c: c.cell_id)
def test_drawn_parameters_equal_instantiated_mynets_bit_for_bit(cell):
    torch.manual_seed(7)
    nets = [MyNet(1, 16, 1, cell.depth, cell.bn_every, cell.use_skip) for _ in range(3)]
    after_instantiating = torch.rand(1)
    torch.manual_seed(7)
    drawn = stacked.draw_stacked_nets(cell, n_inits=3, n_hid=16)
    assert torch.equal(torch.rand(1), after_instantiating)  # the RNG was consumed identically
    for mine, theirs in zip(drawn.parameters(), stacked.stack_nets(nets).parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_stacked_training_step_equals_train_one_epoch(float64):
    torch.manual_seed(3)
    nets = [MyNet(1, 16, 1, 5, 2, use_skip=False) for _ in range(2)]
    batched = stacked.stack_nets(nets)
    stacked.train_stacked(batched, lr=0.1, n_train_points=10)
    for net in nets:
        gradients.train_one_epoch(net)
    for mine, theirs in zip(batched.parameters(), stacked.stack_nets(nets).parameters(), strict=True):
        assert torch.allclose(mine, theirs, rtol=1e-10, atol=1e-12)
    assert not torch.equal(batched.w_hid[0], stacked.draw_stacked_nets(Cell(5, 2, False), 2, 16).w_hid[0])


def batchnorm_net_with_random_affine() -> MyNet:
    """Return a small float64 net with two BatchNorms whose weight and bias are not the identity."""
    torch.manual_seed(1)
    net = MyNet(1, 12, 1, depth=5, batchnorm_frequency=2, use_skip=True).double()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.5, 0.5)
    return net


def output_with_frozen_batch_stats(net: MyNet, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Return net(x), each BatchNorm normalising with the (biased) batch statistics of reference."""
    stats = []
    hooks = [m.register_forward_hook(lambda m, inputs, out: stats.append(torch.var_mean(inputs[0], 0, unbiased=False)))
             for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    net.train()
    with torch.no_grad():
        net(reference)
    for hook in hooks:
        hook.remove()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    for module, (var, mean) in zip(norms, stats, strict=True):
        module.running_var.copy_(var)
        module.running_mean.copy_(mean)
    net.eval()  # eval mode normalises with the running statistics: here, the reference batch's, fixed
    with torch.no_grad():
        return net(x)


def test_per_sample_equals_a_per_point_central_finite_difference():
    net = batchnorm_net_with_random_affine()
    x = torch.linspace(-3, 3, 40, dtype=torch.float64).unsqueeze(1)
    step = 1e-6
    # eval mode is point-wise, so shifting every point at once gives each f(x_j +- h) with the stats held fixed
    difference = (output_with_frozen_batch_stats(net, x + step, x)
                  - output_with_frozen_batch_stats(net, x - step, x))[:, 0] / (2 * step)
    per_sample = gradients.per_sample_gradient(net.train(), x)
    assert torch.allclose(per_sample, difference, rtol=1e-6, atol=1e-8 * difference.abs().max())
    assert not torch.allclose(per_sample, gradients.seed_gradient(net, x), rtol=1e-2)  # the protocols differ


@pytest.mark.parametrize("use_skip", [False, True])
def test_seed_and_per_sample_agree_without_batchnorm(use_skip):
    literal = gradients.literal_gradient_cell(Cell(5, None, use_skip), SMALL)
    np.testing.assert_allclose(literal["seed"], literal["per_sample"], rtol=1e-5,
                               atol=1e-6 * np.abs(literal["seed"]).max())


@pytest.mark.parametrize("cell", [Cell(2, 1, False), Cell(3, 2, True), Cell(5, 1, False)], ids=lambda c: c.cell_id)
def test_seed_gradient_vanishes_when_batchnorm_directly_precedes_the_output(cell):
    for grads in (gradients.literal_gradient_cell(cell, SMALL),
                  {p: g.numpy() for p, g in gradients.vectorised_gradients(cell, SMALL, "cpu").items()}):
        assert np.abs(grads["seed"]).max() < 1e-5 * np.abs(grads["per_sample"]).max()


def test_nonfinite_gradients_are_counted_not_raised(monkeypatch):
    config = dataclasses.replace(SMALL, n_inits=2, n_points=16)
    real = gradients.vectorised_gradients

    def overflowing(cell, config, device):
        grads = real(cell, config, device)
        grads["seed"][0, :4] = float("inf")  # what float32 overflow in an exploding cell looks like
        grads["seed"][1, 0] = float("nan")
        return grads

    monkeypatch.setattr(gradients, "vectorised_gradients", overflowing)
    result = gradients.run_gradient_cell(Cell(5, None, True), config, "cpu")
    metrics = result.tables["gradient_metrics"].set_index(["protocol", "metric"])["value"]
    assert metrics[("seed", "nonfinite_fraction")] == pytest.approx(5 / 32)
    assert metrics[("per_sample", "nonfinite_fraction")] == 0.0
    assert np.isfinite(metrics[("seed", "mean_abs_grad")])
    assert np.isinf(result.tables["gradients"]["grad"]).sum() == 4


def test_huge_learning_rate_overflows_into_nonfinite_data_without_crashing():
    config = dataclasses.replace(SMALL, n_inits=2, n_points=16, train_lr=1e30)
    result = gradients.run_gradient_cell(Cell(5, None, True), config, "cpu")
    metrics = result.tables["gradient_metrics"].set_index(["protocol", "metric"])["value"]
    assert metrics[("seed", "nonfinite_fraction")] > 0


def test_run_gradient_cell_produces_the_contract_columns():
    config = dataclasses.replace(SMALL, n_inits=2, n_points=16, max_lag=3)
    result = gradients.run_gradient_cell(Cell(3, 1, True), config, "cpu")
    table = result.tables["gradients"]
    assert list(table.columns) == TABLE_COLUMNS["gradients"]
    assert len(table) == 2 * 2 * 16  # protocol x init x point
    assert set(table["protocol"]) == {"seed", "per_sample"}
    assert table[["depth", "bn_every", "skip"]].drop_duplicates().values.tolist() == [[3, 1, True]]
    metrics = result.tables["gradient_metrics"]
    assert list(metrics.columns) == TABLE_COLUMNS["gradient_metrics"]
    expected = [name for name in ["mean_abs_grad", "median_abs_grad", "nonfinite_fraction", "lag1_autocorr",
                                  "lag1_autocorr_of_mean", "autocorr_lag_1", "autocorr_lag_2", "autocorr_lag_3",
                                  "sign_changes_per_unit"]]
    assert metrics.groupby("protocol")["metric"].apply(list).to_dict() == {"seed": expected, "per_sample": expected}


def test_gradient_cells_follow_the_lab_grid():
    cells = gradients.gradient_cells(GradientConfig())
    assert len(cells) == 60
    assert cells[0] == Cell(2, None, False) and cells[-1] == Cell(75, 1, True)
    assert all(cell.seed is None for cell in cells)
