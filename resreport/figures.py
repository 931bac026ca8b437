"""Draw the report's figures from the tidy tables as print-sharp, light PNG files."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the non-interactive backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from resreport.findings import batchnorm_precedes_output  # noqa: E402

DPI = 150  # sharp at A4 print width, a few hundred kB per figure
PAGE_WIDTH = 6.7  # inches: the PDF's text width
SKIP_COLOURS = {False: "#d95f02", True: "#1b9e77"}
SKIP_NAMES = {False: "no skip", True: "skip"}

plt.rcParams.update({"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "xtick.labelsize": 6,
                     "ytick.labelsize": 6, "legend.fontsize": 6, "axes.linewidth": 0.5, "lines.linewidth": 0.9,
                     "svg.fonttype": "none"})


def bn_values(frame: pd.DataFrame) -> list[int | None]:
    """Return the BatchNorm frequencies present, in the lab's order: none, then sparse to dense."""
    values = {None if pd.isna(v) else int(v) for v in frame["bn_every"].unique()}
    return sorted(values, key=lambda v: -math.inf if v is None else -v)


def bn_title(bn_every: int | None) -> str:
    return "no BN" if bn_every is None else f"BN every {bn_every}"


def _select(frame: pd.DataFrame, depth: int, bn_every: int | None, skip: bool | None = None) -> pd.DataFrame:
    mask = (frame["depth"] == depth) & (frame["bn_every"].isna() if bn_every is None else frame["bn_every"] == bn_every)
    if skip is not None:
        mask &= frame["skip"] == skip
    return frame[mask]


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.02)
    plt.close(fig)
    return path.name


def plot_gradient_curves(gradients: pd.DataFrame, protocol: str, path: Path) -> str:
    """Draw the mean gradient curve over x per depth x BatchNorm frequency, each curve scaled to its largest |value|."""
    frame = gradients[gradients["protocol"] == protocol]
    depths, bns = sorted(frame["depth"].unique()), bn_values(frame)
    fig, axes = plt.subplots(len(depths), len(bns), figsize=(PAGE_WIDTH, 0.95 * len(depths) + 0.4), sharex=True,
                             sharey=True, squeeze=False)
    for i, depth in enumerate(depths):
        for j, bn_every in enumerate(bns):
            ax = axes[i][j]
            notes = []
            for skip in (False, True):
                cell = _select(frame, depth, bn_every, skip)
                if cell.empty:
                    continue
                finite = np.isfinite(cell["grad"].to_numpy())
                mean = cell.assign(grad=cell["grad"].where(finite)).groupby("x")["grad"].mean()
                scale = float(np.nanmax(np.abs(mean.to_numpy()))) if mean.notna().any() else math.nan
                if scale > 0:
                    ax.plot(mean.index, mean.to_numpy() / scale, color=SKIP_COLOURS[skip])
                note = "0" if scale == 0 else f"{scale:.1e}" if math.isfinite(scale) else "none finite"
                if not finite.all():
                    note += f", overflow {1 - finite.mean():.0%}"
                notes.append((skip, f"{SKIP_NAMES[skip]}: ×{note}"))
            for k, (skip, note) in enumerate(notes):
                ax.text(0.02, 0.05 + 0.16 * k, note, transform=ax.transAxes, fontsize=5, color=SKIP_COLOURS[skip],
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 0.5})
            ax.axhline(0, color="0.8", linewidth=0.4)
            ax.set_ylim(-1.15, 1.15)
            ax.set_yticks([-1, 0, 1])
            if i == 0:
                ax.set_title(bn_title(bn_every))
            if j == 0:
                ax.set_ylabel(f"depth {depth}")
            if i == len(depths) - 1:
                ax.set_xlabel("x")
    fig.tight_layout(pad=0.3, h_pad=0.3, w_pad=0.3)
    return _save(fig, path)


def plot_gradient_heatmaps(metrics: pd.DataFrame, protocol: str, path: Path) -> str:
    """Draw log10 mean |gradient| and lag-1 autocorrelation over depth x BatchNorm frequency, per skip."""
    frame = metrics[metrics["protocol"] == protocol]
    depths, bns = sorted(frame["depth"].unique()), bn_values(frame)
    fig, axes = plt.subplots(2, 2, figsize=(PAGE_WIDTH, 0.42 * len(depths) * 2 + 1.0), squeeze=False)
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
            ax.set_xticks(range(len(bns)), [bn_title(b) for b in bns])
            ax.set_yticks(range(len(depths)), [str(d) for d in depths])
            ax.set_ylabel("depth")
            ax.set_title(f"{label}, {SKIP_NAMES[skip]}")
            fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    fig.tight_layout(pad=0.3)
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
    depths, bns = sorted(frame["depth"].unique()), bn_values(frame)
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(depths)))
    fig, axes = plt.subplots(2, len(bns), figsize=(PAGE_WIDTH, 2.9), sharex=True, sharey=True, squeeze=False)
    for row, skip in enumerate((False, True)):
        for col, bn_every in enumerate(bns):
            ax = axes[row][col]
            for colour, depth in zip(colours, depths):
                cell = _select(frame, depth, bn_every, skip).sort_values("lag")
                ax.plot(cell["lag"], cell["value"], color=colour, marker=".", markersize=2, label=f"depth {depth}")
            ax.axhline(0, color="0.8", linewidth=0.4)
            ax.set_ylim(-1.05, 1.05)
            ax.set_title(f"{bn_title(bn_every)}, {SKIP_NAMES[skip]}")
            if row == 1:
                ax.set_xlabel("lag (points)")
    axes[0][0].set_ylabel("autocorrelation")
    axes[1][0].set_ylabel("autocorrelation")
    axes[0][-1].legend(loc="upper right", frameon=False, handlelength=1)
    fig.tight_layout(pad=0.3)
    return _save(fig, path)


def plot_loss_curves(curves: pd.DataFrame, path: Path) -> str:
    """Draw training (dashed) and validation (solid) loss per cell; bands span the seeds when there are several."""
    depths, bns = sorted(curves["depth"].unique()), bn_values(curves)
    finite = curves["loss"][np.isfinite(curves["loss"])]
    upper = float(min(finite.max(), 1.3 * finite.quantile(0.95))) if len(finite) else 1.0
    fig, axes = plt.subplots(len(depths), len(bns), figsize=(PAGE_WIDTH, 1.05 * len(depths) + 0.5), sharex=True,
                             sharey=True, squeeze=False)
    for i, depth in enumerate(depths):
        for j, bn_every in enumerate(bns):
            ax = axes[i][j]
            for skip in (False, True):
                cell = _select(curves, depth, bn_every, skip)
                for split, style in (("train", "--"), ("val", "-")):
                    stats = cell[cell["split"] == split].groupby("epoch")["loss"].agg(["mean", "min", "max", "count"])
                    ax.plot(stats.index, stats["mean"], style, color=SKIP_COLOURS[skip],
                            label=f"{split}, {SKIP_NAMES[skip]}")
                    if len(stats) and stats["count"].max() > 1:
                        ax.fill_between(stats.index, stats["min"], stats["max"], color=SKIP_COLOURS[skip], alpha=0.2,
                                        linewidth=0)
                if len(cell) and not np.isfinite(cell["loss"]).all():
                    ax.text(0.97, 0.9 - 0.12 * skip, f"{SKIP_NAMES[skip]}: diverged", transform=ax.transAxes,
                            ha="right", fontsize=5, color=SKIP_COLOURS[skip])
            ax.set_ylim(0, upper)
            if i == 0:
                ax.set_title(bn_title(bn_every))
            if j == 0:
                ax.set_ylabel(f"depth {depth}\nloss")
            if i == len(depths) - 1:
                ax.set_xlabel("epoch")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(pad=0.3, rect=(0, 0.04, 1, 1))
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
