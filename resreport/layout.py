"""Describe where each layer and BatchNorm of MyNet sits, without importing torch (render uses it)."""
from __future__ import annotations


def batchnorm_after(depth: int, bn_every: int | None) -> list[int]:
    """Return the layer numbers (1..depth-1) that a BatchNorm follows; never the output layer."""
    if bn_every is None:
        return []
    return [k for k in range(1, depth) if k % bn_every == 0]


def layer_kinds(depth: int, bn_every: int | None, use_skip: bool) -> list[str]:
    """Describe the net's modules in order, e.g. ['Linear', 'BatchNorm1d', 'Residual', ..., 'Linear']."""
    middle = "Residual" if use_skip else "Linear+ReLU"
    after = set(batchnorm_after(depth, bn_every))
    kinds = []
    for k in range(1, depth + 1):
        kinds.append("Linear" if k in (1, depth) else middle)
        if k in after:
            kinds.append("BatchNorm1d")
    return kinds
