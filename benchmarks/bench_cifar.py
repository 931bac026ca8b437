"""Time the CIFAR suite's train_cell against two literal DataLoader loops on the same data, in one run.

    .venv/bin/python benchmarks/bench_cifar.py                          # all 40 cells, 20 epochs, both references
    .venv/bin/python benchmarks/bench_cifar.py --cells 4 --epochs 5     # a subset, extrapolated to the full grid
    .venv/bin/python benchmarks/bench_cifar.py --reference lab          # only the lab-literal ImageFolder loop

The references (--reference lab|tensor|both|none, default both):

  lab     the lab written literally: torchvision ImageFolder over <data>/train restricted to the two classes,
          per-item transforms (ToTensor, Normalize(mean, std)), a train/val Subset, one DataLoader(batch 512)
          per model (num_workers=0), model.train / zero_grad / forward / CrossEntropyLoss / backward / step,
          and per epoch (and epoch 0) an eval pass over train and val through DataLoaders under
          model.eval() + torch.no_grad(). Every epoch decodes the JPEGs again.
  tensor  a DataLoader over the decoded, normalised tensors already in memory (TensorDataset), same loop.

All implementations train the same cells from the same initial weights (build_model, seeded per cell as
train_cell seeds it), in the same batch order (a sampler yielding train_cell's per-epoch randperm), on the
same split (rebuilt from resreport.data's list_image_files / stratified_subset / stratified_split, checked
against the loaded labels) with the same normalisation (CifarData's mean/std, fitted on training only), and
record the same numbers (epoch 0 and every epoch: training and validation loss/accuracy in eval mode); all
stop a cell whose training loss becomes non-finite, as train_cell does. The script prints wall time, the
ratio reference / train_cell, the arithmetic FLOP count (matrix multiplies only), achieved GFLOP/s, the floor
implied by a first-layer-shaped matmul, the largest difference between each reference's curves and
train_cell's, and peak memory. With --cells or --epochs it also prints the full grid's seconds, explicitly
as an extrapolation: x (grid cells / cells run) x (images through the model at 20 epochs / at E epochs).
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
from torch.utils.data import DataLoader, Sampler, Subset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resreport.cells import Cell  # noqa: E402
from resreport.cifar import (build_model, cell_seed, cifar_cells, score_on_test, select_best_model,  # noqa: E402
                             train_cell)
from resreport.config import CifarConfig  # noqa: E402
from resreport.data import (CifarData, list_image_files, load_cifar, stratified_split,  # noqa: E402
                            stratified_subset)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RESREPORT_DATA", DEFAULT_DATA)),
                        help="ImageFolder-layout CIFAR folder (default: $RESREPORT_DATA or ../shared/data/cifar10-jpeg)")
    parser.add_argument("--cache", type=Path, default=Path("build/cache/data"), help="decoded-image cache folder")
    parser.add_argument("--cells", type=int, default=None, help="time N cells spread evenly over the grid (default: all)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per cell (default: the config's 20)")
    parser.add_argument("--reference", choices=("lab", "tensor", "both", "none"), default="both",
                        help="lab: ImageFolder + per-item transforms (decodes JPEGs every epoch); tensor: "
                             "DataLoader over in-memory tensors; both (default); none: only train_cell")
    parser.add_argument("--skip-reference", action="store_true", help="same as --reference none")
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
    """Train one cell with the 'tensor' reference: TensorDataset + DataLoader per model, the textbook loop."""
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


def lab_datasets(config: CifarConfig, data_dir: Path, data: CifarData) -> tuple[Subset, Subset]:
    """Return the lab's (train, val) Subsets of an ImageFolder with per-item transforms, on data.py's split.

    The split is rebuilt read-only from resreport.data's own helpers (the file order of list_image_files,
    then stratified_subset and stratified_split with the config's seeds, as split_and_normalise does) and
    mapped onto the ImageFolder's sample order by path; the labels are checked against CifarData's.
    """
    from torchvision import datasets, transforms

    class TwoClassImageFolder(datasets.ImageFolder):
        """ImageFolder restricted to the configured classes, each labelled by its position in config.classes."""

        def find_classes(self, directory):
            return list(config.classes), {name: k for k, name in enumerate(config.classes)}

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])
    folder = TwoClassImageFolder(str(data_dir / "train"), transform=transform)
    files = list_image_files(data_dir, config.classes)["train"]  # data.py's pool order
    pool_labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    pool_keep = stratified_subset(pool_labels, config.max_images_per_class, config.split_seed)
    train_index, val_index = stratified_split(pool_labels[pool_keep], config.val_fraction, config.split_seed,
                                              config.classes)
    train_index, val_index = pool_keep[train_index], pool_keep[val_index]
    position = {os.path.realpath(path): i for i, (path, _) in enumerate(folder.samples)}
    to_folder = [position[os.path.realpath(path)] for path, _ in files]
    subsets = []
    for index, labels, name in ((train_index, data.train_y, "train"), (val_index, data.val_y, "val")):
        subset = Subset(folder, [to_folder[i] for i in index.tolist()])
        if not torch.equal(torch.tensor([folder.targets[i] for i in subset.indices]), labels):
            raise SystemExit(f"the rebuilt {name} split does not match the loaded CifarData labels")
        subsets.append(subset)
    return subsets[0], subsets[1]


def lab_train_cell(cell: Cell, config: CifarConfig, train_set: Subset, val_set: Subset, n_in: int,
                   n_out: int) -> list[tuple[float, ...]]:
    """Train one cell as the lab is written: ImageFolder Subsets, a DataLoader per model, the textbook loop."""
    model = build_model(cell, config, n_in, n_out)  # the same seeded initial weights as train_cell
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    generator = torch.Generator().manual_seed(cell_seed(config, cell, "batches"))
    # shuffle=True, but through train_cell's per-epoch randperm so the batches are the same
    train_loader = DataLoader(train_set, batch_size=config.batch_size,
                              sampler=EpochPermutation(len(train_set), generator))
    train_eval_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=False)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, shuffle=False)
    curve = [lab_evaluate(model, criterion, train_eval_loader, val_loader)]  # epoch 0
    for _ in range(config.n_epochs):
        model.train()
        running = 0.0
        for images, labels in train_loader:
            images = images.view(images.size(0), -1)
            optimizer.zero_grad()
            outputs = model(images)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running += loss.item() * labels.size(0)
        curve.append(lab_evaluate(model, criterion, train_eval_loader, val_loader))
        if not (math.isfinite(running) and math.isfinite(curve[-1][0])):
            break  # as train_cell: a diverged cell stops
    return curve


def lab_evaluate(model, criterion, train_loader: DataLoader, val_loader: DataLoader) -> tuple[float, ...]:
    """Return (train loss, train accuracy, val loss, val accuracy) the lab's way: eval mode, no_grad, loaders."""
    model.eval()
    values = []
    with torch.no_grad():
        for loader in (train_loader, val_loader):
            total, correct, n = 0.0, 0, 0
            for images, labels in loader:
                outputs = model(images.view(images.size(0), -1))
                total += criterion(outputs, labels).item() * labels.size(0)
                correct += (outputs.argmax(1) == labels).sum().item()
                n += labels.size(0)
            values += [total / n, correct / n]
    return tuple(values)


def images_through_model(n_epochs: int, n_train: int, n_val: int) -> int:
    """Images one cell passes through the net: n_epochs training passes plus n_epochs + 1 eval passes."""
    return n_epochs * n_train + (n_epochs + 1) * (n_train + n_val)


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
    full_epochs = config.n_epochs
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
    n_train, n_val = len(data.train_x), len(data.val_x)
    subsetting = len(cells) < len(cifar_cells(config)) or config.n_epochs != full_epochs
    scale = (len(cifar_cells(config)) / len(cells)) * (images_through_model(full_epochs, n_train, n_val)
                                                       / images_through_model(config.n_epochs, n_train, n_val))
    print(f"cells: {len(cells)} of {len(cifar_cells(config))}, {config.n_epochs} epochs, batch {config.batch_size}; "
          f"epochs run (divergence stops early): {sum(epochs_run.values())}")
    print(f"matmul (512x3072)@(3072x64): {gflops_matmul:.1f} GFLOP/s")
    print(f"arithmetic: {flops / 1e12:.3f} TFLOP -> floor {floor:.1f} s at the matmul rate")
    print(f"train_cell ({args.workers} process(es)): {seconds_ours:.1f} s ({flops / seconds_ours / 1e9:.1f} GFLOP/s, "
          f"{seconds_ours / floor:.2f}x floor)")
    if subsetting:
        print(f"  EXTRAPOLATION (not measured) to the full grid, {len(cifar_cells(config))} cells x {full_epochs} epochs, scale {scale:.2f} = "
              f"cells {len(cifar_cells(config))}/{len(cells)} x images through the net "
              f"{images_through_model(full_epochs, n_train, n_val)}/{images_through_model(config.n_epochs, n_train, n_val)}"
              f": train_cell {seconds_ours * scale:.0f} s")
    print(f"peak memory after train_cell: {peak_ours:.2f} GiB (ru_maxrss, includes the decoded data)")
    report_selection(results, config, data)
    reference_kind = "none" if args.skip_reference else args.reference
    kinds = {"lab": ["lab"], "tensor": ["tensor"], "both": ["lab", "tensor"], "none": []}[reference_kind]
    if "lab" in kinds:
        train_set, val_set = lab_datasets(config, args.data, data)
        sample = train_set[0][0].view(-1)
        print(f"lab split rebuilt from resreport.data: {len(train_set)} train / {len(val_set)} val, labels equal "
              f"CifarData's; first training image, ImageFolder+transforms vs CifarData: max |diff| "
              f"{(sample - data.train_x[0]).abs().max().item():.1e}")
    n_in, n_out = data.train_x.shape[1], len(data.classes)
    for kind in kinds:
        warm_up_reference(kind, config, data, train_set if kind == "lab" else None,
                          val_set if kind == "lab" else None)
        reference, start = {}, time.perf_counter()
        for cell in cells:
            if kind == "lab":
                reference[cell] = lab_train_cell(cell, config, train_set, val_set, n_in, n_out)
            else:
                reference[cell] = reference_train_cell(cell, config, data)
        seconds_reference = time.perf_counter() - start
        difference = max(max_curve_difference(ours[c], reference[c]) for c in cells)
        label = {"lab": "REFERENCE lab (ImageFolder JPEGs + per-item ToTensor/Normalize, DataLoader per model)",
                 "tensor": "REFERENCE tensor (TensorDataset over in-memory tensors, DataLoader per model)"}[kind]
        print(f"{label}: {seconds_reference:.1f} s ({flops / seconds_reference / 1e9:.1f} GFLOP/s); "
              f"ratio {kind} / train_cell: {seconds_reference / seconds_ours:.2f}x")
        print(f"  largest |difference| between {kind}'s curves and train_cell's (losses and accuracies, "
              f"{len(cells)} cells): {difference:.2e}")
        if subsetting:
            print(f"  EXTRAPOLATION (not measured) to the full grid, {len(cifar_cells(config))} cells x {full_epochs} epochs: "
                  f"{kind} {seconds_reference * scale:.0f} s vs train_cell {seconds_ours * scale:.0f} s")
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
    """Run one short cell through train_cell so allocator and thread pools are warm."""
    short = dataclasses.replace(config, n_epochs=1)
    train_cell(Cell(3, 1, True, 0), short, data, "cpu")


def warm_up_reference(kind: str, config: CifarConfig, data: CifarData, train_set, val_set) -> None:
    """Warm a reference up untimed: one short tensor cell, or a few lab batches (imports, PIL, allocator)."""
    if kind == "tensor":
        reference_train_cell(Cell(3, 1, True, 0), dataclasses.replace(config, n_epochs=1), data)
        return
    for i, (images, _) in enumerate(DataLoader(train_set, batch_size=config.batch_size)):
        if i == 2:
            break


if __name__ == "__main__":
    main()
