"""Compute the input gradients of the lab's nets after one training step, under both protocols.

Protocols (DESIGN.md): "seed" is the lab's recipe, the gradient of the summed outputs in train mode, so
BatchNorm's batch statistics carry every input into every output; "per_sample" is each point's own
derivative f'(x_j) with the batch statistics held fixed as constants. Running statistics never enter
either protocol (every pass is in train mode), so the fast path does not track them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn, optim

from resreport import gradient_metrics
from resreport.cells import Cell, CellResult, grid_cells
from resreport.config import GradientConfig
from resreport.models import MyNet
from resreport.stacked import draw_stacked_nets, input_gradients_stacked, train_stacked

PROTOCOLS = ("seed", "per_sample")


def gradient_cells(config: GradientConfig) -> list[Cell]:
    """Return the gradient suite's cells in the lab's loop order."""
    return grid_cells(config.depths, config.bn_every, config.use_skip)


def input_points(config: GradientConfig) -> torch.Tensor:
    """Return the lab's evenly spaced inputs X; shape (n_points, 1)."""
    return torch.linspace(config.x_min, config.x_max, config.n_points).unsqueeze(1)


# ---------------------------------------------------------------- the literal, per-model reference


def train_one_epoch(model, lr: float = 1e-1, n_train_points: int = 10):
    """
    Performs one small training iteration to emulate an early training situation
    """
    model.train()
    optimizer = optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    optimizer.zero_grad(set_to_none=True)

    X = torch.linspace(-3, 3, n_train_points).unsqueeze(1)

    outputs = model(X)
    loss = loss_fn(outputs, torch.cos(X))
    loss.backward()

    optimizer.step()
    optimizer.zero_grad()


def seed_gradient(net: MyNet, x: torch.Tensor) -> torch.Tensor:
    """Return d sum(net(X)) / dX in train mode, the lab's recipe; shape (n_points,)."""
    net.train()
    inputs = x.clone().requires_grad_(True)
    net(inputs).sum().backward()
    return inputs.grad[:, 0].detach().clone()


def forward_with_fixed_batch_stats(net: MyNet, inputs: torch.Tensor) -> torch.Tensor:
    """Run net's layers, normalising each BatchNorm with the batch's statistics held as constants."""
    h = inputs
    for module in net.layers:
        if isinstance(module, nn.BatchNorm1d):
            mean = h.mean(0).detach()
            var = h.var(0, unbiased=False).detach()  # biased, as train-mode BatchNorm normalises
            h = (h - mean) / torch.sqrt(var + module.eps) * module.weight + module.bias
        else:
            h = module(h)
    return h


def per_sample_gradient(net: MyNet, x: torch.Tensor) -> torch.Tensor:
    """Return each point's own derivative f'(x_j), batch statistics fixed; shape (n_points,)."""
    inputs = x.clone().requires_grad_(True)
    forward_with_fixed_batch_stats(net, inputs).sum().backward()  # outputs now depend on their own x only
    return inputs.grad[:, 0].detach().clone()


def literal_gradient_cell(cell: Cell, config: GradientConfig) -> dict[str, np.ndarray]:
    """Run the lab's per-model loop for one cell; each protocol's gradients as (n_inits, n_points)."""
    torch.manual_seed(config.seed)
    x = input_points(config)
    grads = {protocol: [] for protocol in PROTOCOLS}
    for _ in range(config.n_inits):
        net = MyNet(1, config.n_hid, 1, cell.depth, cell.bn_every, cell.use_skip)
        train_one_epoch(net, lr=config.train_lr, n_train_points=config.n_train_points)
        for param in net.parameters():
            param.requires_grad_(False)
        grads["seed"].append(seed_gradient(net, x))
        grads["per_sample"].append(per_sample_gradient(net, x))
    return {protocol: torch.stack(curves).numpy() for protocol, curves in grads.items()}


# ---------------------------------------------------------------- the fast path: all inits at once


def vectorised_gradients(cell: Cell, config: GradientConfig, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Compute one cell's gradients for all n_inits at once; each protocol (n_inits, n_points) on device."""
    torch.manual_seed(config.seed)
    nets = draw_stacked_nets(cell, config.n_inits, config.n_hid).to(device)
    train_stacked(nets, config.train_lr, config.n_train_points)
    x = input_points(config)[:, 0].to(device)
    return input_gradients_stacked(nets, x)


# ---------------------------------------------------------------- tables


def run_gradient_cell(cell: Cell, config: GradientConfig, device: str = "cpu") -> CellResult:
    """Compute one cell and return its gradients and gradient_metrics table fragments."""
    return gradient_tables(cell, vectorised_gradients(cell, config, device), config)


def gradient_tables(cell: Cell, grads: dict, config: GradientConfig) -> CellResult:
    """Turn one cell's (n_inits, n_points) gradients per protocol into its contract-table fragments."""
    grads = {protocol: torch.as_tensor(grads[protocol]).float().cpu().numpy() for protocol in PROTOCOLS}
    x = input_points(config)[:, 0].double().numpy()
    gradients = pd.concat([gradient_rows(cell, protocol, grads[protocol], x) for protocol in PROTOCOLS],
                          ignore_index=True)
    metrics = pd.concat([metric_rows(cell, protocol, grads[protocol], config) for protocol in PROTOCOLS],
                        ignore_index=True)
    return CellResult(tables={"gradients": gradients, "gradient_metrics": metrics})


def gradient_rows(cell: Cell, protocol: str, grads: np.ndarray, x: np.ndarray) -> pd.DataFrame:
    """Return one row per init and point for one protocol's (n_inits, n_points) gradients."""
    n_inits, n_points = grads.shape
    frame = pd.DataFrame({"init": np.repeat(np.arange(n_inits), n_points), "x": np.tile(x, n_inits),
                          "grad": grads.reshape(-1)})
    return frame.assign(**cell.columns(), protocol=protocol)[
        ["depth", "bn_every", "skip", "protocol", "init", "x", "grad"]]


def metric_rows(cell: Cell, protocol: str, grads: np.ndarray, config: GradientConfig) -> pd.DataFrame:
    """Return one row per metric (all but ratio_to_depth2) for one protocol's gradients."""
    metrics = gradient_metrics.cell_metrics(grads, config.x_max - config.x_min, config.max_lag)
    frame = pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())})
    return frame.assign(**cell.columns(), protocol=protocol)[
        ["depth", "bn_every", "skip", "protocol", "metric", "value"]]
