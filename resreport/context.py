"""Build the template context: labels, wide tables and commentary items from the tables, findings and manifest."""
from __future__ import annotations

import dataclasses

import math
from typing import Any, TypedDict

import pandas as pd

from resreport.cells import Cell, bn_label, present_bn_every
from resreport.config import Config
from resreport.findings import PROTOCOLS, Finding, batchnorm_precedes_output, cifar_summary
from resreport.layout import batchnorm_after, layer_kinds

PROTOCOL_TITLES = {"seed": "seed protocol (the lab's recipe)", "per_sample": "per_sample protocol"}
VERDICTS = {"exploding": "exploding", "seed_protocol_artefact": "zero by construction (artefact)",
            "vanishing": "vanishing", "shattering": "shattered", "rough": "partly irregular", "smooth": "smooth",
            "healthy": "healthy", "ordinary": "ordinary"}


class Figure(TypedDict):
    number: int
    src: str  # relative to report.html
    caption: str


class ReportContext(TypedDict):
    meta: dict[str, str]  # title, subtitle, author, course, date
    networks: dict[str, Any]  # the BatchNorm placement per suite and example module sequences
    gradients: dict[str, Any]  # per protocol: figures and commentary; protocol differences
    cifar: dict[str, Any]  # loss figure, comparison table, commentary, test score, confusion figure
    provenance: dict[str, Any]  # settings, data, packages, device, commit, timings
    changes: dict[str, Any]  # the "What changed" appendix
    tables: dict[str, int]  # table numbers


def skip_label(skip: bool) -> str:
    return "skip" if skip else "no skip"


def _numbered(start: int):
    counter = iter(range(start, 1000))
    return lambda: next(counter)


def build_context(config: Config, tables: dict[str, pd.DataFrame], findings: list[Finding], figures: dict[str, str],
                  manifest: dict, changes: dict | None) -> ReportContext:
    """Assemble everything the report template shows, in display form."""
    figure_number, table_number = _numbered(1), _numbered(1)
    numbered_tables = {"networks_gradients": table_number(), "networks_cifar": table_number()}

    def figure(name: str, caption: str) -> Figure:
        return {"number": figure_number(), "src": f"figures/{figures[name]}", "caption": caption}

    gradients = gradient_section(findings, figure, config, manifest, n_inits=int(tables["gradients"]["init"].nunique()))
    cifar = cifar_section(tables, findings, figure, config)
    numbered_tables["comparison"] = table_number()
    numbered_tables["settings"] = table_number()
    return {
        "meta": {"title": config.report.title, "subtitle": config.report.subtitle, "author": config.report.author,
                 "course": config.report.course, "date": str(manifest.get("created", ""))[:10]},
        "networks": networks_section(tables),
        "gradients": gradients,
        "cifar": cifar,
        "provenance": provenance_section(manifest, config),
        "changes": changes_section(changes),
        "tables": numbered_tables,
    }


def _grid(frame: pd.DataFrame) -> tuple[list[int], list[int | None]]:
    return sorted(int(d) for d in frame["depth"].unique()), present_bn_every(frame)


def placement_text(layers: list[int]) -> str:
    """Say after which layers BatchNorm sits, eliding long runs: '3, 6, …, 72 (24)'."""
    if not layers:
        return "none"
    if len(layers) <= 5:
        return ", ".join(map(str, layers))
    return f"{layers[0]}, {layers[1]}, …, {layers[-1]} ({len(layers)})"


def networks_section(tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Describe where BatchNorm sits for every grid value present in the tables, from layout.batchnorm_after."""
    suites = []
    for name, frame in (("Gradient suite", tables["gradient_metrics"]), ("CIFAR-10 suite", tables["cells"])):
        depths, bns = _grid(frame)
        rows = [{"bn": bn_label(bn), "cells": [{"text": placement_text(batchnorm_after(d, bn)),
                                                "before_output": batchnorm_precedes_output(d, bn)} for d in depths]}
                for bn in bns]
        suites.append({"name": name, "depths": depths, "rows": rows})
    depths, bns = _grid(tables["cells"])
    example_depth = max(depths[:2])
    examples = [{"label": f"depth {example_depth}, {bn_label(bn)}, {skip_label(skip)}",
                 "modules": " → ".join(layer_kinds(example_depth, bn, skip))}
                for bn in bns for skip in (False, True)]
    return {"suites": suites, "examples": examples}


def _item(cell: Cell, numbers: dict[str, float]) -> dict[str, Any]:
    return {"cell": cell.label, "bn": bn_label(cell.bn_every), "skip": cell.use_skip, **numbers}


def conditions(cells: list[Cell]) -> dict[str, int]:
    """Count the cells with skip and with BatchNorm and give their depth range, to say under which conditions."""
    depths = [c.depth for c in cells] or [0]
    return {"total": len(cells), "with_skip": sum(c.use_skip for c in cells),
            "with_bn": sum(c.bn_every is not None for c in cells), "min_depth": min(depths), "max_depth": max(depths)}


def gradient_section(findings: list[Finding], figure, config: Config, manifest: dict, n_inits: int) -> dict[str, Any]:
    """Group the gradient findings per protocol into commentary items, with the protocol's figures.

    n_inits comes from the gradients table, not the config: `render` may run with a config other than the build's.
    """
    protocols = []
    for protocol in PROTOCOLS:
        mine = [f for f in findings if f.protocol == protocol]
        kinds: dict[str, list] = {k: [] for k in ("exploding", "seed_protocol_artefact", "vanishing", "shattering",
                                                 "rough", "smooth", "healthy")}
        absent: dict[str, dict] = {}
        for finding in mine:
            if finding.kind.startswith("no_"):
                absent[finding.kind[3:]] = _item(finding.cells[0], finding.numbers)
            else:
                item = _item(finding.cells[0], finding.numbers)
                if finding.kind == "seed_protocol_artefact":
                    item["per_sample_mean_abs_grad"] = finding.numbers["per_sample_mean_abs_grad"]
                kinds[finding.kind].append(item)
        protocols.append({
            "name": protocol, "title": PROTOCOL_TITLES[protocol], "kinds": kinds, "absent": absent,
            "summary": {kind: conditions([f.cells[0] for f in mine if f.kind == kind]) for kind in kinds},
            "curves": figure(f"gradient_curves_{protocol}",
                             f"Mean input gradient over x ({protocol} protocol), each curve divided by its largest "
                             "|value|; the factor printed in each panel is that scale (overflow: share of non-finite "
                             "values)."),
            "heatmaps": figure(f"heatmaps_{protocol}",
                               f"log10 mean |gradient| and mean per-initialisation lag-1 autocorrelation "
                               f"({protocol} protocol). † BatchNorm directly before the output layer."),
            "autocorr": figure(f"autocorr_{protocol}",
                               f"Autocorrelation of each initialisation's gradient curve against lag, averaged over "
                               f"initialisations ({protocol} protocol)."),
        })
    differences = [{**_item(f.cells[0], f.numbers), "seed": VERDICTS[f.detail["seed"]],
                    "per_sample": VERDICTS[f.detail["per_sample"]]}
                   for f in findings if f.kind == "protocol_difference"]
    thresholds = config.thresholds
    return {"protocols": protocols, "differences": differences,
            "agreement": any(f.kind == "protocol_agreement" for f in findings),
            "thresholds": {"vanishing_ratio": thresholds.vanishing_ratio, "exploding_ratio": thresholds.exploding_ratio,
                           "shattered_autocorr": thresholds.shattered_autocorr,
                           "smooth_autocorr": thresholds.smooth_autocorr},
            "n_inits": n_inits,
            "constant_curve": manifest.get("conventions", {}).get("constant_curve", "")}


def cifar_section(tables: dict[str, pd.DataFrame], findings: list[Finding], figure, config: Config) -> dict[str, Any]:
    """Build the comparison table of all CIFAR cells, the overfitting commentary and the test score."""
    summary = cifar_summary(tables["cells"], tables["curves"])
    best = next((f for f in findings if f.kind == "best_model"), None)
    rows = [{"cell": r.cell.label, "depth": r.depth, "bn": bn_label(r.cell.bn_every), "skip": skip_label(r.skip),
             "best_val_loss": r.best_val_loss, "best_epoch": r.best_epoch, "final_train_loss": r.final_train_loss,
             "final_val_loss": r.final_val_loss, "gap": r.gap, "val_accuracy": r.val_accuracy,
             "diverged": "yes" if r.diverged else "no", "is_best": best is not None and r.cell == best.cells[0]}
            for r in summary.itertuples(index=False)]
    kinds: dict[str, list] = {k: [] for k in ("overfitting", "no_overfitting", "failed_to_train", "diverged")}
    for finding in findings:
        if finding.kind in kinds:
            kinds[finding.kind].append(_item(finding.cells[0], finding.numbers))
    effects = [{"factor": {"effect_of_skip": "skip connections", "effect_of_batchnorm": "BatchNorm",
                           "effect_of_depth": "depth"}[f.kind],
                "direction": f.detail["direction"], **f.numbers,
                "levels": [{"label": _level_label(f.kind, r["level"]), **r} for r in f.rows]}
               for f in findings if f.kind.startswith("effect_of_")]
    n_seeds = int(summary["n_seeds"].max()) if len(summary) else 0
    return {
        "loss_curves": figure("loss_curves", "Training (dashed) and validation (solid) loss per cell"
                              + (f"; mean over {n_seeds} seeds, band from lowest to highest" if n_seeds > 1 else "")
                              + "."),
        "rows": rows, "kinds": kinds, "effects": effects, "n_seeds": n_seeds,
        "classes": list(config.cifar.classes), "overfit_gap": config.thresholds.overfit_gap,
        "chance_margin": config.thresholds.chance_margin,
        "best": None if best is None else {**_item(best.cells[0], best.numbers), **best.detail},
        "confusion": figure("confusion", "Confusion matrix of the chosen model on the test set (counts)."),
    }


def _level_label(kind: str, level) -> str:
    if kind == "effect_of_skip":
        return "with skip" if level else "without skip"
    if kind == "effect_of_batchnorm":
        return "with BatchNorm" if level else "without BatchNorm"
    return f"depth {level}"


def _settings_rows(section: dict) -> list[dict[str, str]]:
    return [{"name": name, "value": ", ".join("none" if v is None else str(v) for v in value)
             if isinstance(value, (list, tuple)) else "none" if value is None else str(value)}
            for name, value in section.items()]


def provenance_section(manifest: dict, render_config: Config) -> dict[str, Any]:
    """Turn manifest.json into the method-and-provenance tables; thresholds are those this render applied."""
    config = {**manifest.get("config", {}), "thresholds": dataclasses.asdict(render_config.thresholds)}
    fingerprints = manifest.get("fingerprints", {})
    return {
        "created": manifest.get("created", "unknown"),
        "device": manifest.get("device", "unknown"),
        "git_commit": manifest.get("git_commit", "unknown"),
        "data_source": manifest.get("data_source") or "not recorded",
        "data_fingerprint": fingerprints.get("data") or "none",
        "code_fingerprints": [{"name": k, "value": v} for k, v in sorted(fingerprints.get("code", {}).items())],
        "settings": [{"name": name, "rows": _settings_rows(config[name])}
                     for name in ("gradients", "cifar", "thresholds") if name in config],
        "packages": [{"name": k, "value": v} for k, v in sorted(manifest.get("packages", {}).items())],
        "timings": [{"name": k, "seconds": v} for k, v in manifest.get("timings", {}).items()],
        "cells": [{"name": k, **v} for k, v in sorted(manifest.get("cells", {}).items())],
    }


def changes_section(changes: dict | None) -> dict[str, Any]:
    """Describe what moved since the previous build, or that there was none."""
    if changes is None:
        return {"present": False, "previous_build": None, "rtol": math.nan, "added": [], "removed": [], "moved": []}
    return {"present": True, "previous_build": changes.get("previous_build"), "rtol": changes.get("rtol", math.nan),
            "added": list(changes.get("added", [])), "removed": list(changes.get("removed", [])),
            "moved": [dict(m) for m in changes.get("moved", [])]}

