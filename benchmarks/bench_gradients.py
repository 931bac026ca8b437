"""Time the seed-scale gradient suite: the stacked fast path against the lab's per-model loop, same run.

    .venv/bin/python benchmarks/bench_gradients.py            # the full grid (60 cells), ~3 minutes here
    .venv/bin/python benchmarks/bench_gradients.py --cells 6  # a spread of 6 cells, a quick look
    .venv/bin/python benchmarks/bench_gradients.py --threads 1  # one intra-op thread (shared machine)
"""
from __future__ import annotations

import argparse
import os
import resource
import shlex
import sys
import time

import numpy as np
import torch

from resreport.cells import Cell
from resreport.config import GradientConfig
from resreport.gradients import gradient_cells, gradient_tables, literal_gradient_cell, vectorised_gradients


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=None,
                        help="time N cells spread evenly over the lab's grid (default: all 60)")
    parser.add_argument("--device", default="cpu", help="device for the fast path (the literal loop is CPU)")
    parser.add_argument("--repeats", type=int, default=20, help="repeats of the reference bmm")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both paths (default: torch's choice); on a shared, "
                             "loaded machine 1 avoids threads waiting on each other at every op")
    return parser.parse_args(argv)


def select_cells(config: GradientConfig, n_cells: int | None) -> list[Cell]:
    """Return all cells, or n_cells spread evenly over the grid (depths, BatchNorm and skip all vary)."""
    cells = gradient_cells(config)
    if n_cells is None or n_cells >= len(cells):
        return cells
    return [cells[i] for i in np.linspace(0, len(cells) - 1, n_cells).round().astype(int)]


def fast_path_flops(cells: list[Cell], config: GradientConfig) -> float:
    """Return the fast path's matmul FLOPs (hidden n_hid x n_hid layers; elementwise work not counted)."""
    per_layer = 2 * config.n_inits * config.n_hid ** 2  # per row through one hidden layer
    total = 0.0
    for cell in cells:
        n_hidden = cell.depth - 2
        has_bn = cell.bn_every is not None and cell.depth - 1 >= cell.bn_every
        train_rows = 3 * config.n_train_points  # forward, input-gradient, weight-gradient
        gradient_rows = 2 * config.n_points + (config.n_points if has_bn else 0)  # values+tangents, seed backward
        total += per_layer * n_hidden * (train_rows + gradient_rows)
    return total


def reference_bmm_gflops(config: GradientConfig, repeats: int, device: str) -> float:
    """Return GFLOP/s of torch.bmm (n_inits, n_points, n_hid) x (n_inits, n_hid, n_hid)."""
    a = torch.randn(config.n_inits, config.n_points, config.n_hid, device=device)
    b = torch.randn(config.n_inits, config.n_hid, config.n_hid, device=device)
    for _ in range(3):
        torch.bmm(a, b)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.bmm(a, b)
    synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    return 2 * config.n_inits * config.n_points * config.n_hid ** 2 / seconds / 1e9


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fast_path(cells: list[Cell], config: GradientConfig, device: str) -> tuple[float, float, float]:
    """Return (compute seconds, table seconds, non-finite fraction) of the fast path over cells."""
    compute = tables = 0.0
    n_nonfinite = n_values = 0
    for cell in cells:
        start = time.perf_counter()
        grads = vectorised_gradients(cell, config, device)
        synchronize(device)
        middle = time.perf_counter()
        result = gradient_tables(cell, grads, config)
        tables += time.perf_counter() - middle
        compute += middle - start
        values = result.tables["gradients"]["grad"].to_numpy()
        n_nonfinite += int((~np.isfinite(values)).sum())
        n_values += values.size
    return compute, tables, n_nonfinite / n_values


def time_literal_loop(cells: list[Cell], config: GradientConfig) -> float:
    """Return the seconds the lab's per-model loop takes over cells (gradients only)."""
    start = time.perf_counter()
    for cell in cells:
        literal_gradient_cell(cell, config)
    return time.perf_counter() - start


def peak_memory_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux reports KiB


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = GradientConfig()
    cells = select_cells(config, args.cells)
    print(f"reproduce: {shlex.join([sys.executable, *sys.argv])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}, "
          f"{len(cells)} cells x {config.n_inits} inits x {config.n_points} points, both protocols")

    warm_up = Cell(5, 1, True)
    vectorised_gradients(warm_up, config, args.device)
    literal_gradient_cell(warm_up, config)
    bmm_before = reference_bmm_gflops(config, args.repeats, args.device)
    fast_compute, fast_tables, nonfinite = time_fast_path(cells, config, args.device)
    fast_peak = peak_memory_gib()
    bmm_after = reference_bmm_gflops(config, args.repeats, args.device)

    bmm_gflops = (bmm_before + bmm_after) / 2  # the machine is shared: take the rate around the timed region
    flops = fast_path_flops(cells, config)
    floor = flops / (bmm_gflops * 1e9)
    print(f"reference:    {bmm_gflops:8.1f} GFLOP/s torch.bmm ({config.n_inits}, {config.n_points}, {config.n_hid})"
          f" x ({config.n_inits}, {config.n_hid}, {config.n_hid}) ({bmm_before:.1f} before, {bmm_after:.1f} after)")
    print(f"fast path:    {fast_compute:8.2f} s gradients + {fast_tables:.2f} s tables and metrics "
          f"(non-finite gradients: {nonfinite:.2%})")
    print(f"fast FLOPs:   {flops / 1e12:8.3f} TFLOP (matmuls) -> {flops / fast_compute / 1e9:.1f} GFLOP/s achieved")
    print(f"floor:        {floor:8.2f} s at the reference rate -> fast path at {fast_compute / floor:.2f}x floor "
          f"({(fast_compute + fast_tables) / floor:.2f}x with tables)")
    print(f"peak memory:  {fast_peak:8.2f} GiB after the fast path (ru_maxrss)", flush=True)

    literal = time_literal_loop(cells, config)
    print(f"literal loop: {literal:8.2f} s gradients")
    print(f"speed-up:     {literal / fast_compute:8.2f}x (literal / fast, gradients)")
    print(f"peak memory:  {peak_memory_gib():8.2f} GiB in all, literal loop included (ru_maxrss)")
    print(f"load average: {os.getloadavg()[0]:8.2f} at the end (2 cores; other work on the machine slows both paths)")


if __name__ == "__main__":
    main()
