"""Pin the lab's models: BatchNorm placement, the skip rule, the layer kinds."""
import pytest
import torch
from torch import nn

from resreport.layout import batchnorm_after, layer_kinds
from resreport.models import MyNet, MyResidualLayer


def layers_followed_by_batchnorm(net: MyNet) -> list[int]:
    """Return the layer numbers (1..depth) that a BatchNorm1d directly follows in net.layers."""
    numbers, k = [], 0
    for module in net.layers:
        if isinstance(module, nn.BatchNorm1d):
            numbers.append(k)
        else:
            k += 1
    return numbers


def test_bn_every_3_puts_batchnorm_after_layers_3_6_9():
    net = MyNet(1, 8, 1, depth=10, batchnorm_frequency=3, use_skip=True)
    assert layers_followed_by_batchnorm(net) == [3, 6, 9]


def test_depth_2_with_bn_every_1_has_one_batchnorm_before_the_output_layer():
    net = MyNet(1, 8, 1, depth=2, batchnorm_frequency=1, use_skip=False)
    assert [type(m) for m in net.layers] == [nn.Linear, nn.BatchNorm1d, nn.Linear]


@pytest.mark.parametrize("depth, bn_every", [(10, 1), (10, 5), (9, 3), (5, 2), (25, 10), (2, 3)])
def test_no_batchnorm_follows_the_output_layer_and_the_count_is_depth_minus_1_over_every(depth, bn_every):
    net = MyNet(1, 8, 1, depth, bn_every, use_skip=True)
    assert not isinstance(net.layers[-1], nn.BatchNorm1d)
    assert len(layers_followed_by_batchnorm(net)) == (depth - 1) // bn_every
    assert layers_followed_by_batchnorm(net) == batchnorm_after(depth, bn_every)


def test_no_batchnorm_when_bn_every_is_none():
    net = MyNet(1, 8, 1, depth=10, batchnorm_frequency=None, use_skip=True)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())


def test_residual_layer_with_skip_returns_x_plus_relu_fc_x():
    torch.manual_seed(0)
    layer = MyResidualLayer(6, use_skip=True)
    x = torch.randn(5, 6)
    assert torch.allclose(layer(x), x + torch.relu(layer.fc(x)))


def test_residual_layer_without_skip_returns_relu_fc_x():
    torch.manual_seed(0)
    layer = MyResidualLayer(6, use_skip=False)
    x = torch.randn(5, 6)
    assert torch.allclose(layer(x), torch.relu(layer.fc(x)))


def test_layers_are_linear_then_residual_then_linear_with_the_right_shapes():
    net = MyNet(1, 8, 1, depth=5, batchnorm_frequency=None, use_skip=True)
    first, *middle, last = net.layers
    assert isinstance(first, nn.Linear) and first.weight.shape == (8, 1)
    assert all(isinstance(m, MyResidualLayer) and m.fc.weight.shape == (8, 8) for m in middle)
    assert len(middle) == 3
    assert isinstance(last, nn.Linear) and last.weight.shape == (1, 8)


@pytest.mark.parametrize("use_skip", [False, True])
def test_layer_kinds_describe_the_modules_in_order(use_skip):
    net = MyNet(1, 8, 1, depth=7, batchnorm_frequency=2, use_skip=use_skip)
    middle = "Residual" if use_skip else "Linear+ReLU"
    names = {nn.Linear: "Linear", MyResidualLayer: middle, nn.BatchNorm1d: "BatchNorm1d"}
    assert layer_kinds(7, 2, use_skip) == [names[type(m)] for m in net.layers]
