"""Render report.html and report.pdf from the results folder alone, publishing both only when both succeed."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import jinja2

from resreport.config import Config
from resreport.context import build_context
from resreport.findings import all_findings
from resreport.store import read_json, read_table

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
TABLES = ("gradients", "gradient_metrics", "curves", "cells", "test_score", "confusion")
FIGURE_TABLES = ("gradients", "gradient_metrics", "curves", "confusion")  # what figures.py plots
FIGURES_RECORD = "figures.json"  # beside the published figures: the key they were drawn for
DASH = "—"


class RenderError(RuntimeError):
    """The report could not be rendered; the previous report is left in place."""


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def sci(value, digits: int = 1) -> str:
    """Format as 1.2e-05; NaN/None as a dash, infinity as 'overflow'."""
    if _missing(value):
        return DASH
    if math.isinf(value):
        return "overflow"
    return f"{value:.{digits}e}"


def pct(value, digits: int = 1) -> str:
    """Format a fraction as a percentage: 0.853 -> '85.3%'."""
    return DASH if _missing(value) else f"{100 * value:.{digits}f}%"


def num(value, digits: int = 3) -> str:
    """Format with a fixed number of decimals; integers stay integers."""
    if _missing(value):
        return DASH
    if isinstance(value, float) and math.isinf(value):
        return "overflow"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and digits == 0):
        return str(int(value))
    return f"{value:.{digits}f}"


def make_environment() -> jinja2.Environment:
    """Return the Jinja2 environment: strict about missing keys, escaping HTML, with the number filters."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(["html", "j2"], default_for_string=True),
                             trim_blocks=True, lstrip_blocks=True)
    env.filters.update(sci=sci, pct=pct, num=num)
    return env


def fetcher_inside(root: Path):
    """Return a WeasyPrint URL fetcher that serves only files under root; anything else stops the render."""
    from weasyprint.urls import URLFetcher

    class OutputFolderFetcher(URLFetcher):
        def fetch(self, url, headers=None):
            check_inside(url, root)
            return super().fetch(url, headers)

    return OutputFolderFetcher(fail_on_errors=True)


def check_inside(url: str, root: Path) -> Path:
    """Return the local path of url when it lies under root; raise RenderError otherwise."""
    root = Path(root).resolve()
    parsed = urlparse(url)
    path = Path(unquote(parsed.path)).resolve() if parsed.scheme == "file" else None
    if path is None or not path.is_relative_to(root):
        raise RenderError(f"refusing to load {url!r}: the report may only read files under {root}; "
                          "put the file in the output folder or remove the reference from the template")
    return path


def load_tables(results_dir: Path) -> dict:
    """Read every contract table the report shows."""
    return {name: read_table(results_dir, name) for name in TABLES}


def render_html(env: jinja2.Environment, context: dict) -> str:
    return env.get_template("report.html").render(**context)


def write_pdf(html: str, folder: Path, fetch_root: Path) -> Path:
    """Lay out the HTML with WeasyPrint (print CSS) into folder/report.pdf, loading only files under fetch_root."""
    import weasyprint  # heavy; only rendering needs it
    from weasyprint.urls import FatalURLFetchingError

    path = folder / "report.pdf"
    try:
        weasyprint.HTML(string=html, base_url=folder.as_uri() + "/",
                        url_fetcher=fetcher_inside(fetch_root)).write_pdf(path)
    except FatalURLFetchingError as error:  # a BaseException in WeasyPrint; make it an ordinary, clear error
        raise RenderError(str(error.__cause__ or error)) from None
    return path


def publish(staging: Path, out_dir: Path) -> None:
    """Move figures/, report.html and report.pdf from staging into out_dir, replacing the previous ones."""
    old_figures = out_dir / "figures"
    if old_figures.exists():
        old_figures.rename(staging / "figures.previous")
    (staging / "figures").rename(out_dir / "figures")
    for name in ("report.html", "report.pdf"):
        os.replace(staging / name, out_dir / name)


def figures_key(results_dir: Path) -> str:
    """Hash what the figures are drawn from: the tables they plot, figures.py and matplotlib's version."""
    import matplotlib

    sha = hashlib.sha256(matplotlib.__version__.encode())
    sha.update((Path(__file__).parent / "figures.py").read_bytes())
    for name in FIGURE_TABLES:
        sha.update((Path(results_dir) / f"{name}.parquet").read_bytes())
    return sha.hexdigest()


def draw_or_reuse_figures(tables: dict, results_dir: Path, out_dir: Path, staging: Path) -> dict[str, str]:
    """Draw the figures into staging/figures, or copy the published ones when their inputs are unchanged."""
    from resreport.figures import draw_figures  # matplotlib import is slow; keep `import resreport.render` light

    key = figures_key(results_dir)
    record = out_dir / "figures" / FIGURES_RECORD
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous["key"] == key:
            shutil.copytree(out_dir / "figures", staging / "figures")
            log.info("figures unchanged since the last render; reusing them")
            return previous["drawn"]
    drawn = draw_figures(tables, staging / "figures")
    (staging / "figures" / FIGURES_RECORD).write_text(json.dumps({"key": key, "drawn": drawn}))
    return drawn


def render_report(results_dir: Path, out_dir: Path, config: Config) -> dict:
    """Render out_dir/report.html and report.pdf from results_dir; return their paths and seconds per step."""
    results_dir, out_dir = Path(results_dir).resolve(), Path(out_dir).resolve()  # file URIs need absolute paths
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    tables = load_tables(results_dir)
    manifest = read_json(results_dir / "manifest.json")
    changes_path = results_dir / "changes.json"
    changes = read_json(changes_path) if changes_path.is_file() else None
    findings = all_findings(tables, config.thresholds, chance=1 / len(config.cifar.classes))
    seconds["findings"] = time.perf_counter() - start
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=out_dir))
    try:
        start = time.perf_counter()
        figures = draw_or_reuse_figures(tables, results_dir, out_dir, staging)
        seconds["figures"] = time.perf_counter() - start
        start = time.perf_counter()
        html = render_html(make_environment(), build_context(config, tables, findings, figures, manifest, changes))
        (staging / "report.html").write_text(html, encoding="utf-8")
        seconds["html"] = time.perf_counter() - start
        start = time.perf_counter()
        write_pdf(html, staging, out_dir)
        seconds["pdf"] = time.perf_counter() - start
        publish(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("rendered report in %.1f s (%s)", sum(seconds.values()),
             ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return {"html": out_dir / "report.html", "pdf": out_dir / "report.pdf", "figures": out_dir / "figures",
            "seconds": seconds}
