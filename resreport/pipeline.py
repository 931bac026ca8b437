"""Build the report: run the suites through the cell cache, write the tidy tables, then render."""
from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from resreport import changes, store
from resreport.config import Config, ConfigError
from resreport.runner import SuiteOutcome, run_suite, suite_key_parts
from resreport.suites import Suite, cifar_suite, gradient_suite

log = logging.getLogger(__name__)

SUITES = ("gradients", "cifar")


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    data_dir: Path | None  # None: torchvision's CIFAR-10 under its default root
    device: str
    force: bool = False


@dataclass
class BuildReport:
    outcomes: dict[str, SuiteOutcome] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    changes_markdown: str = ""
    published: bool = False

    @property
    def failed(self) -> dict[str, str]:
        return {f"{name}: {cell.label}": error for name, outcome in self.outcomes.items()
                for cell, error in outcome.failed.items()}


def build(config: Config, options: BuildOptions, suites=SUITES, render: bool = True) -> BuildReport:
    """Compute the requested suites, publish their tables, and render the report from the tables alone."""
    report = BuildReport()
    tables: dict[str, pd.DataFrame] = {}
    fingerprints: dict = {"code": {}, "data": None}
    data_source = None
    cache_root = options.out / "cache" / "cells"
    if "gradients" in suites:
        with timed(report.timings, "gradients"):
            suite = gradient_suite(config.gradients, options.device)
            outcome = report.outcomes["gradients"] = run_suite(suite, cache_root, options.device, force=options.force)
            fingerprints["code"]["gradients"] = outcome.code_fingerprint
        if not outcome.failed:
            tables.update(assemble_gradients(outcome))
    if "cifar" in suites:
        from resreport.data import load_cifar

        with timed(report.timings, "data"):
            data = load_cifar(config.cifar, options.data_dir, options.out / "cache" / "data")
        fingerprints["data"], data_source = data.fingerprint, data.source
        with timed(report.timings, "cifar"):
            suite = cifar_suite(config.cifar, data, options.device)
            outcome = report.outcomes["cifar"] = run_suite(suite, cache_root, options.device, force=options.force)
            fingerprints["code"]["cifar"] = outcome.code_fingerprint
        if not outcome.failed:
            with timed(report.timings, "test"):
                tables.update(assemble_cifar(outcome, config, data, options.device))
    if report.failed:
        log.error("%d cells failed; results and report left as they were (finished cells are cached)",
                  len(report.failed))
        return report
    manifest_parts = dict(fingerprints=fingerprints, data_source=data_source, device=options.device,
                          timings=report.timings, cells={name: o.counts() for name, o in report.outcomes.items()})
    report.changes_markdown = publish_results(options.out, tables, config, manifest_parts)
    report.published = True
    if render:
        render_report(config, options.out, report.timings)
    return report


def assemble_gradients(outcome: SuiteOutcome) -> dict[str, pd.DataFrame]:
    """Concatenate the gradient cells' tables and add each cell's ratio to its depth-2 baseline."""
    from resreport.gradient_metrics import add_ratio_to_depth2

    gradients = pd.concat([r.tables["gradients"] for r in outcome.results.values()], ignore_index=True)
    metrics = pd.concat([r.tables["gradient_metrics"] for r in outcome.results.values()], ignore_index=True)
    return {"gradients": gradients, "gradient_metrics": add_ratio_to_depth2(metrics)}


def assemble_cifar(outcome: SuiteOutcome, config: Config, data, device: str) -> dict[str, pd.DataFrame]:
    """Concatenate the CIFAR cells' tables, choose the best model on validation, and score it on test once."""
    from resreport.cifar import score_on_test, select_best_model

    tables = {name: pd.concat([r.tables[name] for r in outcome.results.values()], ignore_index=True)
              for name in ("curves", "cells")}
    best = select_best_model(outcome.results)
    log.info("best model on validation loss: %s", best.label)
    tables.update(score_on_test(best, outcome.results[best], config.cifar, data, device))
    return tables


def publish_results(out: Path, tables: dict[str, pd.DataFrame], config: Config, manifest_parts: dict) -> str:
    """Swap in a complete new results folder (old tables kept for suites not rerun) and write changes.md."""
    from resreport.gradient_metrics import CONSTANT_CURVE_CONVENTION
    from resreport.manifest import build_manifest

    results = out / "results"
    _recover_interrupted_swap(results)
    staging = out / ".results-staging"
    shutil.rmtree(staging, ignore_errors=True)
    if results.is_dir():
        shutil.copytree(results, staging)
    staging.mkdir(parents=True, exist_ok=True)
    previous, previous_created = changes.read_previous(results)
    for name, frame in tables.items():
        store.write_table(frame, staging, name)
    current = {name: pd.read_parquet(staging / f"{name}.parquet") for name in previous.keys() | tables.keys()
               if (staging / f"{name}.parquet").is_file()}
    diff = changes.compare(changes.key_metrics(previous), changes.key_metrics(current), config.thresholds.change_rtol)
    diff["previous_build"] = previous_created
    store.write_json(staging / "changes.json", diff)
    manifest = build_manifest(config, conventions={"constant_curve": CONSTANT_CURVE_CONVENTION},
                              **_merge_previous_manifest(results, manifest_parts))
    store.write_json(staging / "manifest.json", manifest)
    _swap_folder(staging, results)
    markdown = changes.to_markdown(diff)
    store.atomic_write_bytes(out / "changes.md", markdown.encode())
    return markdown


def render_report(config: Config, out: Path, timings: dict) -> dict:
    """Render report.html and report.pdf from the published tables; record the time it took."""
    if not (out / "results" / "manifest.json").is_file():
        raise store.ResultsMissing(f"{out / 'results'} holds no published results; run `python -m resreport build` "
                                   f"(with the same --out) first")
    from resreport.render import render_report as render

    with timed(timings, "render"):
        paths = render(out / "results", out, config)
    manifest = store.read_json(out / "results" / "manifest.json")
    manifest["timings"]["render"] = round(timings["render"], 2)
    store.write_json(out / "results" / "manifest.json", manifest)
    return paths


def status(config: Config, options: BuildOptions) -> list[dict]:
    """Return one row per cell: suite, cell, state (cached/stale/missing/failed) and the key parts that changed."""
    from resreport.cache import CellCache
    from resreport.data import DataError, load_cifar

    suites: list[Suite] = [gradient_suite(config.gradients, options.device)]
    unreadable = []
    try:
        data = load_cifar(config.cifar, options.data_dir, options.out / "cache" / "data")
        suites.append(cifar_suite(config.cifar, data, options.device))
    except (ConfigError, DataError) as error:  # the data fingerprint is part of every CIFAR key
        unreadable.append({"suite": "cifar", "cell": f"every cell: data unavailable: {error}", "state": "unknown",
                           "changed": []})
    rows = []
    for suite in suites:
        cache = CellCache(options.out / "cache" / "cells", suite.name)
        for cell, parts in suite_key_parts(suite, options.device).items():
            state, changed = cache.state(cell, parts)
            rows.append({"suite": suite.name, "cell": cell.label, "state": state, "changed": changed})
    return rows + unreadable


@contextlib.contextmanager
def timed(timings: dict[str, float], stage: str):
    """Add the wall time of the block to timings[stage]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def _merge_previous_manifest(results: Path, parts: dict) -> dict:
    """Keep the previous manifest's entries for suites this run did not touch (`run gradients` alone)."""
    path = results / "manifest.json"
    if not path.is_file():
        return parts
    previous = store.read_json(path)
    merged = dict(parts)
    merged["cells"] = {**previous.get("cells", {}), **parts["cells"]}
    merged["timings"] = {**previous.get("timings", {}), **parts["timings"]}
    merged["fingerprints"] = {"code": {**previous.get("fingerprints", {}).get("code", {}), **parts["fingerprints"]["code"]},
                              "data": parts["fingerprints"]["data"] or previous.get("fingerprints", {}).get("data")}
    merged["data_source"] = parts["data_source"] or previous.get("data_source")
    return merged


def _recover_interrupted_swap(target: Path) -> None:
    """Put the previous results back if a kill landed between _swap_folder's two renames."""
    old = target.with_name(f".{target.name}-old")
    if old.is_dir() and not target.exists():
        old.rename(target)


def _swap_folder(new: Path, target: Path) -> None:
    """Replace target by new with two renames, so readers see the old or the new folder, never a mix."""
    old = target.with_name(f".{target.name}-old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
