"""Rendering: strict templates, escaping, the output-folder fetcher, the PDF's content and atomic publication."""
import dataclasses
import math
import subprocess
import sys

import jinja2
import pytest
from pypdf import PdfReader

from resreport import render
from resreport.config import ReportMeta
from resreport.context import build_context
from resreport.findings import all_findings
from resreport.render import RenderError, check_inside, fetcher_inside, load_tables, make_environment, render_html
from resreport.store import read_json

from test_findings import FIGURES

SECTIONS = ["The networks", "Vanishing, shattering and exploding gradients",
            "Overfitting on CIFAR-10 airplane vs bird", "Method and provenance", "What changed"]


def context_for(results_dir, config):
    tables = load_tables(results_dir)
    return build_context(config, tables, all_findings(tables, config.thresholds), FIGURES,
                         read_json(results_dir / "manifest.json"), read_json(results_dir / "changes.json"))


def test_render_does_not_import_torch():
    code = ("import sys, resreport.render, resreport.figures, resreport.context, resreport.findings; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pdf_text_holds_every_section_and_the_test_score(rendered_report):
    out, answer = rendered_report
    assert answer["html"] == out / "report.html" and answer["pdf"].is_file()
    text = " ".join(page.extract_text() for page in PdfReader(answer["pdf"]).pages)
    text = " ".join(text.split())
    for title in SECTIONS:
        assert title in text
    assert "83.0%" in text and "81.0% to 85.0%" in text


def test_pdf_carries_title_and_author_metadata(rendered_report):
    out, answer = rendered_report
    metadata = PdfReader(answer["pdf"]).metadata
    assert metadata.title.startswith("Residual networks")
    assert metadata.author == "resreport"


def test_html_loads_figures_by_relative_path_from_the_output_folder(rendered_report):
    out, answer = rendered_report
    html = answer["html"].read_text()
    assert 'src="figures/gradient_curves_seed.png"' in html
    assert (out / "figures" / "gradient_curves_seed.png").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".render-")]


def test_template_fails_on_missing_context_key(results_dir, config):
    context = context_for(results_dir, config)
    del context["cifar"]["best"]
    with pytest.raises(jinja2.UndefinedError):
        render_html(make_environment(), context)


def test_html_in_the_title_is_escaped(results_dir, config):
    config = dataclasses.replace(config, report=ReportMeta(title="<script>alert(1)</script> & <b>bold</b>"))
    html = render_html(make_environment(), context_for(results_dir, config))
    assert "<script>alert(1)" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html


def test_fetcher_refuses_a_path_outside_the_output_folder(tmp_path):
    inside = tmp_path / "figures" / "a.png"
    inside.parent.mkdir()
    inside.write_bytes(b"png")
    assert check_inside(inside.as_uri(), tmp_path) == inside
    for url in ("file:///etc/passwd", (tmp_path / ".." / "elsewhere.png").as_uri(), "https://example.org/x.png"):
        with pytest.raises(RenderError, match="only read files under"):
            fetcher_inside(tmp_path).fetch(url)


def test_pdf_render_stops_on_a_file_outside_the_output_folder(tmp_path):
    with pytest.raises(RenderError, match="refusing to load"):
        render.write_pdf('<html><body><img src="file:///etc/hostname"></body></html>', tmp_path, tmp_path)


def test_a_render_failing_midway_leaves_the_previous_report_untouched(rendered_report, monkeypatch):
    out, answer = rendered_report
    before = {name: (out / name).read_bytes() for name in ("report.html", "report.pdf")}
    figures_before = sorted(p.name for p in (out / "figures").iterdir())

    def broken_pdf(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(render, "write_pdf", broken_pdf)
    from conftest import fixture_config
    with pytest.raises(RuntimeError, match="disk full"):
        render.render_report(out / "results", out, fixture_config())
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in (out / "figures").iterdir()) == figures_before
    assert not [p for p in out.iterdir() if p.name.startswith(".render-")]


def test_changes_appendix_says_nothing_moved_or_no_previous_build(results_dir, config):
    context = context_for(results_dir, config)
    context["changes"]["moved"] = []
    context["changes"]["added"] = []
    assert "Nothing moved." in render_html(make_environment(), context)
    context["changes"]["previous_build"] = None
    assert "No previous build" in render_html(make_environment(), context)


@pytest.mark.parametrize("value, expected", [(math.nan, "—"), (None, "—"), (math.inf, "overflow"),
                                             (1.5e-12, "1.5e-12")])
def test_sci_filter_prints_missing_as_a_dash_and_infinity_as_overflow(value, expected):
    assert render.sci(value) == expected


def test_pct_and_num_filters():
    assert render.pct(0.8534) == "85.3%" and render.pct(math.nan) == "—"
    assert render.num(0.12345) == "0.123" and render.num(3.0, 0) == "3" and render.num(None) == "—"


def test_missing_changes_json_renders_as_no_previous_build(results_dir, config):
    tables = load_tables(results_dir)
    context = build_context(config, tables, all_findings(tables, config.thresholds), FIGURES,
                            read_json(results_dir / "manifest.json"), None)
    assert "No previous build: nothing to compare with." in render_html(make_environment(), context)


def test_moved_metrics_are_listed_in_the_appendix(results_dir, config):
    html = render_html(make_environment(), context_for(results_dir, config))
    assert "depth 3, no BN, skip, seed 0" in html and "4.000e-01" in html and "3.500e-01" in html


def test_figures_are_redrawn_only_when_the_tables_they_plot_change(tmp_path, monkeypatch):
    import pandas as pd

    import resreport.figures
    from conftest import fixture_config, write_results

    write_results(tmp_path / "results", changes=None)
    render.render_report(tmp_path / "results", tmp_path, fixture_config())
    drawn = []
    real_draw = resreport.figures.draw_figures
    monkeypatch.setattr(resreport.figures, "draw_figures", lambda *args: drawn.append(1) or real_draw(*args))
    render.render_report(tmp_path / "results", tmp_path, fixture_config())
    assert drawn == [] and (tmp_path / "figures" / "loss_curves.png").is_file()
    curves = pd.read_parquet(tmp_path / "results" / "curves.parquet")
    curves.assign(loss=curves["loss"] * 2).to_parquet(tmp_path / "results" / "curves.parquet", index=False)
    render.render_report(tmp_path / "results", tmp_path, fixture_config())
    assert drawn == [1]


def test_render_accepts_a_relative_output_folder(tmp_path, monkeypatch):
    from pathlib import Path

    from conftest import fixture_config, write_results

    write_results(tmp_path / "build" / "results", changes=None)
    monkeypatch.chdir(tmp_path)
    answer = render.render_report(Path("build/results"), Path("build"), fixture_config())
    assert (tmp_path / "build" / "report.pdf").is_file() and answer["pdf"].is_file()


def test_settings_table_shows_the_thresholds_the_commentary_applied(results_dir, config):
    edited = dataclasses.replace(config, thresholds=dataclasses.replace(config.thresholds, overfit_gap=0.37))
    settings = {section["name"]: section["rows"] for section in context_for(results_dir, edited)["provenance"]["settings"]}
    assert any("0.37" in str(row.values()) for row in settings["thresholds"])
