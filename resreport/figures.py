"""Draw the report's figures from the tidy tables as print-sharp, light PNG files."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the non-interactive backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from resreport.cells import bn_label, present_bn_every  # noqa: E402
from resreport.findings import batchnorm_precedes_output  # noqa: E402

DPI = 150  # sharp at A4 print width, a few hundred kB per figure
PAGE_WIDTH = 6.7  # inches: the PDF's text width
SKIP_COLOURS = {False: "#d95f02", True: "#1b9e77"}
SKIP_NAMES = {False: "no skip", True: "skip"}

STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6,
         "ytick.labelsize": 6, "legend.fontsize": 6, "axes.linewidth": 0.5, "lines.linewidth": 0.9,
         "svg.fonttype": "none"}  # applied around drawing only, never at import


def _select(frame: pd.DataFrame, depth: int, bn_every: int | None, skip: bool | None = None) -> pd.DataFrame:
    mask = (frame["depth"] == depth) & (frame["bn_every"].isna() if bn_every is None else frame["bn_every"] == bn_every)
    if skip is not None:
        mask &= frame["skip"] == skip
    return frame[mask]


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path.name


def mean_curves(gradients: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """Return per cell and x the mean over initialisations of the finite gradients, and each cell's overflow share."""
    frame = gradients[gradients["protocol"] == protocol]
    finite = np.isfinite(frame["grad"].to_numpy())
    frame = frame.assign(grad=frame["grad"].where(finite), nonfinite=~finite,
                         bn_every=frame["bn_every"].astype("Int64").fillna(0).astype(int))  # 0: no BatchNorm
    curves = frame.groupby(["depth", "bn_every", "skip", "x"], sort=True).agg(grad=("grad", "mean")).reset_index()
    overflow = frame.groupby(["depth", "bn_every", "skip"])["nonfinite"].mean().rename("nonfinite").reset_index()
    return curves.merge(overflow, on=["depth", "bn_every", "skip"])


def plot_gradient_curves(gradients: pd.DataFrame, protocol: str, path: Path) -> str:
    """Draw the mean gradient curve over x per depth x BatchNorm frequency, each curve scaled to its largest |value|."""
    curves = mean_curves(gradients, protocol)
    depths, bns = sorted(curves["depth"].unique()), present_bn_every(curves.replace({"bn_every": {0: None}}))
    cells = dict(iter(curves.groupby(["depth", "bn_every", "skip"])))
    fig, axes = _grid_figure(len(depths), len(bns), 1.2, "x")
    for i, depth in enumerate(depths):
        for j, bn_every in enumerate(bns):
            ax = axes[i][j]
            notes = []
            for skip in (False, True):
                cell = cells.get((depth, 0 if bn_every is None else bn_every, skip))
                if cell is None:
                    continue
                grad = cell["grad"].to_numpy()
                scale = float(np.nanmax(np.abs(grad))) if np.isfinite(grad).any() else math.nan
                if scale > 0:
                    ax.plot(cell["x"], grad / scale, color=SKIP_COLOURS[skip])
                note = "0" if scale == 0 else f"{scale:.1e}" if math.isfinite(scale) else "none finite"
                if cell["nonfinite"].iloc[0] > 0:
                    note += f", overflow {cell['nonfinite'].iloc[0]:.0%}"
                notes.append((skip, f"{SKIP_NAMES[skip]}: ×{note}"))
            for k, (skip, note) in enumerate(notes):
                ax.text(0.02, 0.05 + 0.16 * k, note, transform=ax.transAxes, fontsize=5, color=SKIP_COLOURS[skip],
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5})
            x_range = (curves["x"].min(), curves["x"].max())
            ax.plot(x_range, (0, 0), color="0.8", linewidth=0.4)
            ax.set_xlim(*x_range)
            ax.set_ylim(-1.15, 1.15)
            ax.set_yticks([-1, 0, 1])
            ax.set_xticks(np.linspace(*x_range, 5)[1:-1])  # inner ticks: end labels of neighbours would touch
            _label_grid(ax, i, j, len(depths), f"depth {depth}", bn_label(bn_every))
    return _save(fig, path)


def _grid_figure(n_rows: int, n_cols: int, row_height: float, xlabel: str, legend_room: float = 0.0):
    """Return a figure of small multiples laid out by fixed margins (tight_layout costs a second per figure)."""
    height = row_height * n_rows + 0.45 + legend_room
    # Not sharex/sharey: shared limits cost O(panels²); callers set equal limits and _label_grid hides inner labels.
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(PAGE_WIDTH, height), squeeze=False)
    fig.subplots_adjust(left=0.09, right=0.995, top=1 - 0.2 / height, bottom=(0.3 + legend_room) / height,
                        hspace=0.12, wspace=0.06)
    fig.supxlabel(xlabel, y=(0.02 + legend_room) / height, fontsize=7)
    return fig, axes


def _label_grid(ax, i: int, j: int, n_rows: int, row_label: str, column_title: str) -> None:
    ax.tick_params(labelleft=j == 0, labelbottom=i == n_rows - 1, length=2, pad=1)
    if i == 0:
        ax.set_title(column_title, pad=2)
    if j == 0:
        ax.set_ylabel(row_label)


def plot_gradient_heatmaps(metrics: pd.DataFrame, protocol: str, path: Path) -> str:
    """Draw log10 mean |gradient| and lag-1 autocorrelation over depth x BatchNorm frequency, per skip."""
    frame = metrics[metrics["protocol"] == protocol]
    depths, bns = sorted(frame["depth"].unique()), present_bn_every(frame)
    height = 0.42 * len(depths) * 2 + 1.0
    fig, axes = plt.subplots(2, 2, figsize=(PAGE_WIDTH, height), squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.94, top=1 - 0.2 / height, bottom=0.4 / height, wspace=0.3,
                        hspace=0.9 / (height / 2))
    for row, (metric, label, cmap, limits) in enumerate((
            ("mean_abs_grad", "log10 mean |gradient|", "viridis", None),
            ("lag1_autocorr", "lag-1 autocorrelation", "magma", (0.0, 1.0)))):
        grids = {skip: _heatmap_grid(frame, depths, bns, skip, metric, protocol) for skip in (False, True)}
        finite = np.concatenate([values[np.isfinite(values)] for values, _ in grids.values()])
        vmin, vmax = limits or ((finite.min(), finite.max()) if finite.size else (0.0, 1.0))
        vmax = vmax if vmax > vmin else vmin + 1  # one shared scale per metric, so skip and no skip compare
        for col, skip in enumerate((False, True)):
            values, texts = grids[skip]
            ax = axes[row][col]
            image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
            for (r, c), text in np.ndenumerate(texts):
                dark = np.isfinite(values[r, c]) and values[r, c] < (vmin + vmax) / 2
                ax.text(c, r, text, ha="center", va="center", fontsize=5.5, color="white" if dark else "black")
            ax.set_xticks(range(len(bns)), ["none" if b is None else str(b) for b in bns])
            ax.set_xlabel("BatchNorm every", labelpad=1)
            ax.set_yticks(range(len(depths)), [str(d) for d in depths])
            ax.set_ylabel("depth" if col == 0 else "")
            ax.set_title(f"{label}, {SKIP_NAMES[skip]}", pad=2)
            fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    return _save(fig, path)


def _heatmap_grid(frame, depths, bns, skip, metric, protocol) -> tuple[np.ndarray, np.ndarray]:
    """Return the values to colour and the labels to print, marking overflow, exact zeros and the artefact."""
    values = np.full((len(depths), len(bns)), np.nan)
    texts = np.full((len(depths), len(bns)), "", dtype=object)
    for r, depth in enumerate(depths):
        for c, bn_every in enumerate(bns):
            cell = _select(frame, depth, bn_every, skip).set_index("metric")["value"]
            if cell.empty:
                continue
            value = float(cell.get(metric, np.nan))
            overflow = float(cell.get("nonfinite_fraction", 0.0)) > 0
            if metric == "mean_abs_grad":
                value = math.log10(value) if 0 < value < math.inf else (-math.inf if value == 0 else math.nan)
            texts[r, c] = "overflow" if overflow else "0" if value == -math.inf else "—" if math.isnan(value) \
                else f"{value:.1f}" if metric == "mean_abs_grad" else f"{value:.2f}"
            if protocol == "seed" and batchnorm_precedes_output(depth, bn_every):
                texts[r, c] += "†"
            values[r, c] = value if math.isfinite(value) else np.nan
    return values, texts


def plot_autocorr_vs_lag(metrics: pd.DataFrame, protocol: str, path: Path) -> str:
    """Draw the per-initialisation autocorrelation against lag, one line per depth, per skip and BatchNorm frequency."""
    frame = metrics[(metrics["protocol"] == protocol) & metrics["metric"].str.startswith("autocorr_lag_")]
    frame = frame.assign(lag=frame["metric"].str.removeprefix("autocorr_lag_").astype(int))
    depths, bns = sorted(frame["depth"].unique()), present_bn_every(frame)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(depths)))
    fig, axes = _grid_figure(2, len(bns), 1.2, "lag (points)", legend_room=0.2)
    for row, skip in enumerate((False, True)):
        for col, bn_every in enumerate(bns):
            ax = axes[row][col]
            for colour, depth in zip(colours, depths):
                cell = _select(frame, depth, bn_every, skip).sort_values("lag")
                ax.plot(cell["lag"], cell["value"], color=colour, marker=".", markersize=2, label=f"depth {depth}")
            ax.plot((1, frame["lag"].max()), (0, 0), color="0.8", linewidth=0.4)
            ax.set_xlim(1, frame["lag"].max())
            ax.set_ylim(-1.05, 1.05)
            _label_grid(ax, row, col, 2, f"{SKIP_NAMES[skip]}\nautocorrelation", bn_label(bn_every))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(depths), frameon=False, bbox_to_anchor=(0.5, 0.0))
    return _save(fig, path)


def plot_loss_curves(curves: pd.DataFrame, path: Path) -> str:
    """Draw training (dashed) and validation (solid) loss per cell; bands span the seeds when there are several."""
    depths, bns = sorted(curves["depth"].unique()), present_bn_every(curves)
    finite = curves["loss"][np.isfinite(curves["loss"])]
    upper = float(min(finite.max(), 1.3 * finite.quantile(0.95))) if len(finite) else 1.0
    frame = curves.assign(bn_every=curves["bn_every"].astype("Int64").fillna(0).astype(int))
    stats = frame.groupby(["depth", "bn_every", "skip", "split", "epoch"])["loss"].agg(["mean", "min", "max", "count"])
    stats = dict(iter(stats.reset_index(level="epoch").groupby(level=[0, 1, 2, 3])))
    diverged = frame.groupby(["depth", "bn_every", "skip"])["loss"].apply(lambda s: not np.isfinite(s).all())
    fig, axes = _grid_figure(len(depths), len(bns), 1.0, "epoch", legend_room=0.2)
    for i, depth in enumerate(depths):
        for j, bn_every in enumerate(bns):
            ax = axes[i][j]
            key = (depth, 0 if bn_every is None else bn_every)
            for skip in (False, True):
                for split, style in (("train", "--"), ("val", "-")):
                    cell = stats.get((*key, skip, split))
                    if cell is None:
                        continue
                    ax.plot(cell["epoch"], cell["mean"], style, color=SKIP_COLOURS[skip],
                            label=f"{split}, {SKIP_NAMES[skip]}")
                    if cell["count"].max() > 1:
                        ax.fill_between(cell["epoch"], cell["min"], cell["max"], color=SKIP_COLOURS[skip], alpha=0.2,
                                        linewidth=0)
                if diverged.get((*key, skip), False):
                    ax.text(0.97, 0.9 - 0.12 * skip, f"{SKIP_NAMES[skip]}: diverged", transform=ax.transAxes,
                            ha="right", fontsize=5, color=SKIP_COLOURS[skip])
            ax.set_xlim(curves["epoch"].min(), curves["epoch"].max())
            ax.set_ylim(0, upper)
            _label_grid(ax, i, j, len(depths), f"depth {depth}\nloss", bn_label(bn_every))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, 0.0))
    return _save(fig, path)


def plot_confusion(confusion: pd.DataFrame, path: Path) -> str:
    """Draw the chosen model's test confusion matrix with counts."""
    matrix = confusion.pivot_table(index="true_class", columns="predicted_class", values="count", aggfunc="sum",
                                   fill_value=0)
    fig, ax = plt.subplots(figsize=(2.4, 2.0))
    ax.imshow(matrix.to_numpy(), cmap="Blues")
    for (r, c), count in np.ndenumerate(matrix.to_numpy()):
        ax.text(c, r, str(count), ha="center", va="center",
                color="white" if count > matrix.to_numpy().max() / 2 else "black")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns)
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout(pad=0.3)
    return _save(fig, path)


def draw_figures(tables: dict[str, pd.DataFrame], folder: Path) -> dict[str, str]:
    """Draw every figure into folder; return {figure name: file name}."""
    with plt.rc_context(STYLE):
        return _draw_all(tables, folder)


def _draw_all(tables: dict[str, pd.DataFrame], folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for protocol in ("seed", "per_sample"):
        drawn[f"gradient_curves_{protocol}"] = plot_gradient_curves(
            tables["gradients"], protocol, folder / f"gradient_curves_{protocol}.png")
        drawn[f"heatmaps_{protocol}"] = plot_gradient_heatmaps(
            tables["gradient_metrics"], protocol, folder / f"heatmaps_{protocol}.png")
        drawn[f"autocorr_{protocol}"] = plot_autocorr_vs_lag(
            tables["gradient_metrics"], protocol, folder / f"autocorr_{protocol}.png")
    drawn["loss_curves"] = plot_loss_curves(tables["curves"], folder / "loss_curves.png")
    drawn["confusion"] = plot_confusion(tables["confusion"], folder / "confusion.png")
    return drawn
