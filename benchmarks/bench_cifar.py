"""Time the CIFAR suite's train_cell against the lab's literal DataLoader loop on the same data, in one run.

    .venv/bin/python benchmarks/bench_cifar.py                # all 40 seed-scale cells, 20 epochs
    .venv/bin/python benchmarks/bench_cifar.py --cells 8      # 8 cells spread over the grid, extrapolated

Both implementations train the same cells from the same initial weights with the same batch order and
record the same numbers (epoch 0 and every epoch: training and validation loss/accuracy in eval mode), and
both stop a cell whose training loss becomes non-finite. The script prints wall time, their ratio, the
arithmetic FLOP count (matrix multiplies only), achieved GFLOP/s, the floor implied by a first-layer-shaped
matmul, the largest difference between the two implementations' curves, and peak memory.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resreport.cells import Cell  # noqa: E402
from resreport.cifar import (build_model, cell_seed, cifar_cells, score_on_test, select_best_model,  # noqa: E402
                             train_cell)
from resreport.config import CifarConfig  # noqa: E402
from resreport.data import CifarData, load_cifar  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RESREPORT_DATA", DEFAULT_DATA)),
                        help="ImageFolder-layout CIFAR folder (default: $RESREPORT_DATA or ../shared/data/cifar10-jpeg)")
    parser.add_argument("--cache", type=Path, default=Path("build/cache/data"), help="decoded-image cache folder")
    parser.add_argument("--cells", type=int, default=None, help="time N cells spread evenly over the grid (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per cell (default: the config's 20)")
    parser.add_argument("--skip-reference", action="store_true", help="time only train_cell")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both implementations (default: torch's choice); on a "
                             "shared machine 1 avoids OpenMP spin-waits behind other processes")
    parser.add_argument("--workers", type=int, default=1,
                        help="train cells in W forked processes sharing the threads (what a pipeline could do)")
    return parser.parse_args()


def choose_cells(config: CifarConfig, n_cells: int | None) -> list[Cell]:
    """Return all cells, or n_cells spread evenly over the grid so every depth is represented."""
    cells = cifar_cells(config)
    if n_cells is None or n_cells >= len(cells):
        return cells
    return [cells[(i * len(cells)) // n_cells] for i in range(n_cells)]


def linear_shapes(cell: Cell, n_in: int, n_hid: int, n_out: int) -> list[tuple[int, int]]:
    """Return (in, out) of every Linear in the cell's net, first layer first."""
    return [(n_in, n_hid)] + [(n_hid, n_hid)] * (cell.depth - 2) + [(n_hid, n_out)]


def cell_flops(cell: Cell, config: CifarConfig, data: CifarData, epochs_run: int) -> float:
    """Count matmul FLOPs: training forward + weight and input gradients (none for the input), eval forward."""
    shapes = linear_shapes(cell, data.train_x.shape[1], config.n_hid, len(data.classes))
    forward = sum(2 * i * o for i, o in shapes)  # per row
    backward = sum(2 * i * o for i, o in shapes) + sum(2 * i * o for i, o in shapes[1:])  # dW, then dX
    n_train, n_val = len(data.train_x), len(data.val_x)
    return epochs_run * n_train * (forward + backward) + (epochs_run + 1) * (n_train + n_val) * forward


class EpochPermutation(Sampler):
    """shuffle=True with one randperm per epoch, as train_cell draws it.

    RandomSampler draws a second (empty-remainder) permutation every epoch, and a DataLoader holding the
    generator draws a worker seed from it; either would visit the batches in another order than train_cell.
    """

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __iter__(self):
        yield from torch.randperm(self.n, generator=self.generator).tolist()

    def __len__(self) -> int:
        return self.n


def reference_train_cell(cell: Cell, config: CifarConfig, data: CifarData) -> list[tuple[float, ...]]:
    """Train one cell the lab's way: TensorDataset + DataLoader per model, the textbook loop."""
    model = build_model(cell, config, data.train_x.shape[1], len(data.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    generator = torch.Generator().manual_seed(cell_seed(config, cell, "batches"))  # same batch order as train_cell
    train_set = TensorDataset(data.train_x, data.train_y)
    val_set = TensorDataset(data.val_x, data.val_y)
    train_loader = DataLoader(train_set, batch_size=config.batch_size, sampler=EpochPermutation(len(train_set), generator))
    eval_loaders = [DataLoader(s, batch_size=config.batch_size) for s in (train_set, val_set)]
    curve = [reference_evaluate(model, eval_loaders)]
    for _ in range(config.n_epochs):
        model.train()
        running = 0.0
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(x)
        curve.append(reference_evaluate(model, eval_loaders))
        if not (math.isfinite(running) and math.isfinite(curve[-1][0])):
            break
    return curve


def reference_evaluate(model, loaders) -> tuple[float, ...]:
    """Return (train loss, train accuracy, val loss, val accuracy), the textbook way."""
    model.eval()
    values = []
    with torch.no_grad():
        for loader in loaders:
            total, correct, n = 0.0, 0, 0
            for x, y in loader:
                output = model(x)
                total += F.cross_entropy(output, y, reduction="sum").item()
                correct += (output.argmax(1) == y).sum().item()
                n += len(y)
            values += [total / n, correct / n]
    return tuple(values)


def curve_values(result) -> list[tuple[float, ...]]:
    """Return train_cell's curve as (train loss, train acc, val loss, val acc) per epoch."""
    wide = result.tables["curves"].pivot(index="epoch", columns="split", values=["loss", "accuracy"])
    return [tuple(row) for row in wide[[("loss", "train"), ("accuracy", "train"), ("loss", "val"),
                                        ("accuracy", "val")]].itertuples(index=False)]


def matmul_gflops(repeats: int = 100, rounds: int = 7) -> float:
    """Measure GFLOP/s of the first layer's forward shape, (512 x 3072) @ (3072 x 64): best of several rounds."""
    a, b = torch.randn(512, 3072), torch.randn(3072, 64)
    for _ in range(30):
        a @ b
    best = math.inf
    for _ in range(rounds):  # best round: the machine is shared, the floor is what it can do undisturbed
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 512 * 3072 * 64 * repeats / best / 1e9


def max_curve_difference(ours, reference) -> float:
    """Return the largest absolute difference between two curves over their common finite entries."""
    diffs = [abs(a - b) for row_a, row_b in zip(ours, reference) for a, b in zip(row_a, row_b)
             if math.isfinite(a) and math.isfinite(b)]
    length_mismatch = len(ours) != len(reference)
    return math.inf if length_mismatch else max(diffs, default=0.0)


def main() -> None:
    args = parse_args()
    config = CifarConfig()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.epochs is not None:
        config = dataclasses.replace(config, n_epochs=args.epochs)
    start = time.perf_counter()
    data = load_cifar(config, args.data, args.cache)
    print(f"data: {data.source}, {len(data.train_x)} train / {len(data.val_x)} val, "
          f"loaded in {time.perf_counter() - start:.2f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    cells = choose_cells(config, args.cells)
    warm_up(config, data)
    gflops_matmul = matmul_gflops()

    start = time.perf_counter()
    results = run_cells(cells, config, data, args.workers)
    seconds_ours = time.perf_counter() - start
    peak_ours = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    peak_ours /= 2**20  # KiB -> GiB on Linux; for workers, the largest single process
    ours = {cell: curve_values(result) for cell, result in results.items()}
    epochs_run = {cell: int(result.tables["cells"]["epochs_run"].iloc[0]) for cell, result in results.items()}

    flops = sum(cell_flops(cell, config, data, epochs_run[cell]) for cell in cells)
    floor = flops / (gflops_matmul * 1e9)
    scale = len(cifar_cells(config)) / len(cells)
    print(f"cells: {len(cells)} of {len(cifar_cells(config))}, {config.n_epochs} epochs, batch {config.batch_size}; "
          f"epochs run (divergence stops early): {sum(epochs_run.values())}")
    print(f"matmul (512x3072)@(3072x64): {gflops_matmul:.1f} GFLOP/s")
    print(f"arithmetic: {flops / 1e12:.3f} TFLOP -> floor {floor:.1f} s at the matmul rate")
    print(f"train_cell ({args.workers} process(es)): {seconds_ours:.1f} s ({flops / seconds_ours / 1e9:.1f} GFLOP/s, {seconds_ours / floor:.2f}x floor)"
          f"; whole grid extrapolated: {seconds_ours * scale:.0f} s")
    print(f"peak memory after train_cell: {peak_ours:.2f} GiB (ru_maxrss, includes the decoded data)")
    report_selection(results, config, data)
    if args.skip_reference:
        return
    reference, start = {}, time.perf_counter()
    for cell in cells:
        reference[cell] = reference_train_cell(cell, config, data)
    seconds_reference = time.perf_counter() - start
    difference = max(max_curve_difference(ours[c], reference[c]) for c in cells)
    print(f"literal DataLoader loop: {seconds_reference:.1f} s ({flops / seconds_reference / 1e9:.1f} GFLOP/s); "
          f"whole grid extrapolated: {seconds_reference * scale:.0f} s")
    print(f"ratio literal / train_cell: {seconds_reference / seconds_ours:.2f}x")
    print(f"largest |difference| between the two implementations' curves: {difference:.2e}")
    print(f"peak memory (whole run): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


_SHARED: dict = {}  # what forked workers inherit: config and data, never pickled


def run_cells(cells: list[Cell], config: CifarConfig, data: CifarData, workers: int) -> dict:
    """Train every cell with train_cell, serially or in forked workers; return {cell: CellResult}."""
    _SHARED.update(config=config, data=data, threads=max(1, torch.get_num_threads() // workers))
    if workers <= 1:
        outcomes = [train_one(cell) for cell in cells]
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers, initializer=limit_threads) as pool:
            outcomes = pool.map(train_one, cells, chunksize=1)
    return dict(zip(cells, outcomes))


def limit_threads() -> None:
    """Give each worker its share of the intra-op threads."""
    torch.set_num_threads(_SHARED["threads"])


def train_one(cell: Cell):
    """Train one cell with the shared config and data."""
    return train_cell(cell, _SHARED["config"], _SHARED["data"], "cpu")


def report_selection(results: dict, config: CifarConfig, data: CifarData) -> None:
    """Print the cells that diverged, the model chosen on validation loss, and its single test score."""
    diverged = [cell.label for cell, result in results.items() if result.tables["cells"]["diverged"].iloc[0]]
    best = select_best_model(results)
    score = score_on_test(best, results[best], config, data, "cpu")["test_score"].iloc[0]
    print(f"diverged: {', '.join(diverged) or 'none'}")
    print(f"chosen on validation loss: {best.label}, epoch {score['epoch']}: val loss {score['val_loss']:.4f}, "
          f"val accuracy {score['val_accuracy']:.4f}; test accuracy {score['test_accuracy']:.4f} "
          f"[{score['ci_low']:.4f}, {score['ci_high']:.4f}], test loss {score['test_loss']:.4f}, n={score['n_test']}")


def warm_up(config: CifarConfig, data: CifarData) -> None:
    """Run one short cell through both implementations so allocator and thread pools are warm."""
    short = dataclasses.replace(config, n_epochs=1)
    cell = Cell(3, 1, True, 0)
    train_cell(cell, short, data, "cpu")
    reference_train_cell(cell, short, data)


if __name__ == "__main__":
    main()
