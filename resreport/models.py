"""Define the lab's residual layer and network."""
from __future__ import annotations

import torch
from torch import nn

from resreport.layout import batchnorm_after


class MyResidualLayer(nn.Module):
    """x + relu(fc(x)) with a skip connection, relu(fc(x)) without."""

    def __init__(self, n_hid: int, use_skip: bool):
        super().__init__()
        self.fc = nn.Linear(n_hid, n_hid)
        self.use_skip = use_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.fc(x))
        return x + out if self.use_skip else out


class MyNet(nn.Module):
    """Linear(n_in, n_hid), depth-2 residual layers, Linear(n_hid, n_out); BatchNorm after every bn_every-th layer."""

    def __init__(self, n_in: int, n_hid: int, n_out: int, depth: int, batchnorm_frequency: int | None,
                 use_skip: bool):
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be at least 2 (input and output layer), got {depth}")
        after = set(batchnorm_after(depth, batchnorm_frequency))
        layers: list[nn.Module] = []
        for k in range(1, depth + 1):
            if k == 1:
                layers.append(nn.Linear(n_in, n_hid))
            elif k == depth:
                layers.append(nn.Linear(n_hid, n_out))
            else:
                layers.append(MyResidualLayer(n_hid, use_skip))
            if k in after:
                layers.append(nn.BatchNorm1d(n_hid))
        self.layers = nn.Sequential(*layers)
        self.depth = depth
        self.batchnorm_frequency = batchnorm_frequency
        self.use_skip = use_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
