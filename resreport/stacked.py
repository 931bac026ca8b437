"""Run one cell's n_inits nets at once: their parameters stacked along a leading init axis, batched matmuls.

The lab's nets for one cell share every shape, so each layer of all initialisations is one bmm. Running
statistics never enter the gradient protocols (every pass is in train mode), so they are not tracked.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from resreport.cells import Cell
from resreport.layout import batchnorm_after
from resreport.models import MyNet

BN_EPS = 1e-5  # nn.BatchNorm1d's default


@dataclass
class StackedNets:
    """The parameters of one cell's n_inits MyNets, stacked along a leading init axis (nn.Linear's (out, in))."""

    w_in: torch.Tensor  # (n_inits, n_hid): Linear(1, n_hid).weight[:, 0]
    b_in: torch.Tensor  # (n_inits, n_hid)
    w_hid: list[torch.Tensor]  # depth-2 x (n_inits, n_hid, n_hid), layers 2..depth-1
    b_hid: list[torch.Tensor]  # depth-2 x (n_inits, n_hid)
    w_out: torch.Tensor  # (n_inits, n_hid): Linear(n_hid, 1).weight[0]
    b_out: torch.Tensor  # (n_inits,)
    gamma: dict[int, torch.Tensor]  # layer k -> (n_inits, n_hid) of the BatchNorm after it
    beta: dict[int, torch.Tensor]
    use_skip: bool

    @property
    def depth(self) -> int:
        return len(self.w_hid) + 2

    def parameters(self) -> list[torch.Tensor]:
        """Return every tensor SGD updates."""
        return [self.w_in, self.b_in, *self.w_hid, *self.b_hid, self.w_out, self.b_out,
                *self.gamma.values(), *self.beta.values()]

    def to(self, device: str) -> "StackedNets":
        """Return a copy on device."""
        return StackedNets(**{f.name: _move(getattr(self, f.name), device) for f in dataclasses.fields(self)})


def _move(value, device: str):
    """Move a tensor, or the tensors of a list or dict, to device; leave anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [item.to(device) for item in value]
    if isinstance(value, dict):
        return {key: item.to(device) for key, item in value.items()}
    return value


def linear_init_bounds(fan_in: int) -> tuple[float, float]:
    """Return nn.Linear.reset_parameters' uniform bounds (weight, bias), computed as torch computes them."""
    gain = nn.init.calculate_gain("leaky_relu", math.sqrt(5))  # kaiming_uniform_(weight, a=sqrt(5))
    weight_bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
    return weight_bound, 1 / math.sqrt(fan_in)


def draw_stacked_nets(cell: Cell, n_inits: int, n_hid: int) -> StackedNets:
    """Draw n_inits MyNets' parameters straight into stacked tensors, consuming the RNG as MyNet(...) does.

    Instantiating the lab grid's 60 x 30 MyNets takes ~12 s on 2 cores, mostly nn.Module and BatchNorm set-up;
    the draws alone take a fraction of that. A test pins the result bit for bit to stack_nets(MyNet(...)).
    """
    depth = cell.depth
    w_in, b_in = torch.empty(n_inits, n_hid), torch.empty(n_inits, n_hid)
    w_hid = [torch.empty(n_inits, n_hid, n_hid) for _ in range(depth - 2)]
    b_hid = [torch.empty(n_inits, n_hid) for _ in range(depth - 2)]
    w_out, b_out = torch.empty(n_inits, n_hid), torch.empty(n_inits)
    bound_1, bias_bound_1 = linear_init_bounds(1)
    bound_hid, bias_bound_hid = linear_init_bounds(n_hid)
    for i in range(n_inits):  # the order MyNet's constructor draws in: net by net, layer by layer, weight then bias
        w_in[i].uniform_(-bound_1, bound_1)
        b_in[i].uniform_(-bias_bound_1, bias_bound_1)
        for w, b in zip(w_hid, b_hid):
            w[i].uniform_(-bound_hid, bound_hid)
            b[i].uniform_(-bias_bound_hid, bias_bound_hid)
        w_out[i].uniform_(-bound_hid, bound_hid)
        b_out[i:i + 1].uniform_(-bias_bound_hid, bias_bound_hid)
    after = batchnorm_after(depth, cell.bn_every)
    return StackedNets(w_in, b_in, w_hid, b_hid, w_out, b_out, {k: torch.ones(n_inits, n_hid) for k in after},
                       {k: torch.zeros(n_inits, n_hid) for k in after}, cell.use_skip)


def stack_nets(nets: list[MyNet]) -> StackedNets:
    """Stack instantiated MyNets' parameters (the reference that draw_stacked_nets must equal)."""
    linears = [[m for m in net.modules() if isinstance(m, nn.Linear)] for net in nets]  # input, hidden, output
    norms = [[m for m in net.modules() if isinstance(m, nn.BatchNorm1d)] for net in nets]

    def stacked(modules: list[list[nn.Module]], index: int, name: str) -> torch.Tensor:
        return torch.stack([getattr(net_modules[index], name).detach() for net_modules in modules]).clone()

    depth = nets[0].depth
    after = batchnorm_after(depth, nets[0].batchnorm_frequency)
    return StackedNets(
        w_in=stacked(linears, 0, "weight")[:, :, 0].contiguous(), b_in=stacked(linears, 0, "bias"),
        w_hid=[stacked(linears, k, "weight") for k in range(1, depth - 1)],
        b_hid=[stacked(linears, k, "bias") for k in range(1, depth - 1)],
        w_out=stacked(linears, -1, "weight")[:, 0].contiguous(), b_out=stacked(linears, -1, "bias")[:, 0].contiguous(),
        gamma={k: stacked(norms, j, "weight") for j, k in enumerate(after)},
        beta={k: stacked(norms, j, "bias") for j, k in enumerate(after)},
        use_skip=nets[0].use_skip)


def batch_norm_stacked(h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Apply train-mode BatchNorm to h (n_inits, n_points, n_hid): each init's units over the points."""
    n_inits, n_points, n_hid = h.shape
    flat = h.transpose(0, 1).reshape(n_points, n_inits * n_hid)  # one BatchNorm channel per (init, unit)
    # torch's fused kernel (biased variance, eps 1e-5): a few ops per layer instead of ~25 under autograd
    out = F.batch_norm(flat, None, None, gamma.reshape(-1), beta.reshape(-1), training=True, eps=BN_EPS)
    return out.reshape(n_points, n_inits, n_hid).transpose(0, 1)


def forward_stacked(nets: StackedNets, x: torch.Tensor) -> torch.Tensor:
    """Run all n_inits nets in train mode on the same inputs x (n_points,); return (n_inits, n_points)."""
    h = x[None, :, None] * nets.w_in[:, None, :] + nets.b_in[:, None, :]  # (n_inits, n_points, n_hid)
    for k in range(1, nets.depth):
        if k > 1:
            z = torch.relu(torch.baddbmm(nets.b_hid[k - 2][:, None, :], h, nets.w_hid[k - 2].transpose(1, 2)))
            h = h + z if nets.use_skip else z
        if k in nets.gamma:
            h = batch_norm_stacked(h, nets.gamma[k], nets.beta[k])
    return torch.bmm(h, nets.w_out[:, :, None])[..., 0] + nets.b_out[:, None]


def train_stacked(nets: StackedNets, lr: float, n_train_points: int) -> None:
    """Apply train_one_epoch's SGD step to every net at once (in place): MSE to cos(x) on the lab's points."""
    x = torch.linspace(-3, 3, n_train_points, device=nets.w_in.device)
    params = nets.parameters()
    for param in params:
        param.requires_grad_(True)
    outputs = forward_stacked(nets, x)  # (n_inits, n_train_points)
    loss = ((outputs - torch.cos(x)) ** 2).mean(dim=1).sum()  # summing nets' losses keeps their gradients apart
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for param in params:
            param.requires_grad_(False)
        for param, grad in zip(params, grads):
            param.add_(grad, alpha=-lr)  # optim.SGD's step: no momentum, no weight decay


@torch.no_grad()
def input_gradients_stacked(nets: StackedNets, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return both protocols' input gradients (n_inits, n_points) of trained, frozen stacked nets.

    One forward carries values and d/dx tangents together (n_in = 1): rows [0, n) hold h, rows [n, 2n)
    hold dh/dx with batch statistics fixed, so each layer is one bmm and the tangents give per_sample.
    Without BatchNorm every output depends on its own x only and seed equals per_sample; with BatchNorm a
    manual backward of the summed outputs (input-gradients only, no weight gradients) gives seed.
    """
    n_points = x.numel()
    h = x[None, :, None] * nets.w_in[:, None, :] + nets.b_in[:, None, :]  # (n_inits, n_points, n_hid)
    ht = torch.cat([h, nets.w_in[:, None, :].expand_as(h)], dim=1)  # (n_inits, 2 n_points, n_hid)
    need_seed = bool(nets.gamma)
    masks, norms = {}, {}  # what the seed backward needs: layer k -> relu' as 0/1 floats, BatchNorm statistics
    spare, mask_buffer = torch.empty_like(ht), torch.empty_like(h)  # reused: fresh 4-8 MB buffers page-fault
    for k in range(1, nets.depth):
        if k > 1:
            z = torch.bmm(ht, nets.w_hid[k - 2].transpose(1, 2), out=spare)
            values, tangents = z[:, :n_points], z[:, n_points:]
            torch.relu_(values.add_(nets.b_hid[k - 2][:, None, :]))
            # relu'(pre) as 0/1 floats: float products are ~15x faster than bool masks here
            mask = torch.sign(values) if need_seed else torch.sign(values, out=mask_buffer)
            tangents.mul_(mask)
            if nets.use_skip:
                ht.add_(z)
            else:
                ht, spare = z, ht
            if need_seed:
                masks[k] = mask
        if k in nets.gamma:
            values = ht[:, :n_points]
            values.sub_(values.mean(dim=1, keepdim=True))  # centred, in place
            var = torch.linalg.vecdot(values, values, dim=1)[:, None, :] / n_points  # biased, (n_inits, 1, n_hid)
            rstd = torch.rsqrt(var + BN_EPS)
            scale = nets.gamma[k][:, None, :] * rstd  # d y / d h with the statistics fixed
            if need_seed:
                norms[k] = (values.clone(), rstd, scale)
            ht.mul_(scale)  # values become gamma * xhat, tangents d/dx through the fixed statistics
            values.add_(nets.beta[k][:, None, :])
    per_sample = torch.bmm(ht[:, n_points:], nets.w_out[:, :, None])[..., 0]
    seed = seed_backward(nets, masks, norms, n_points) if need_seed else per_sample.clone()  # no BatchNorm: equal
    return {"seed": seed, "per_sample": per_sample}


def seed_backward(nets: StackedNets, masks: dict, norms: dict, n_points: int) -> torch.Tensor:
    """Back-propagate d sum(outputs) to the inputs through the relu masks and train-mode BatchNorms."""
    n_inits, n_hid = nets.w_out.shape
    g = nets.w_out[:, None, :].expand(n_inits, n_points, n_hid).contiguous()  # d sum(out) / d h_{depth-1}
    for k in range(nets.depth - 1, 0, -1):
        if k in norms:
            centred, rstd, scale = norms.pop(k)  # free as we go
            # scale * (g - mean(g) - xhat * mean(g * xhat)) with xhat = centred * rstd, all in place
            coef = scale * rstd * rstd * torch.linalg.vecdot(g, centred, dim=1)[:, None, :] / n_points
            g.sub_(g.mean(dim=1, keepdim=True)).mul_(scale).addcmul_(centred, coef, value=-1)
        if k > 1:
            g_pre = masks.pop(k).mul_(g)  # the mask's buffer is not needed again
            w = nets.w_hid[k - 2]
            g = g.baddbmm_(g_pre, w) if nets.use_skip else torch.bmm(g_pre, w, out=g)  # g_pre holds g's values
    return (g * nets.w_in[:, None, :]).sum(dim=2)
