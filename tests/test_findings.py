"""The commentary rules on hand-made tables: each kind of finding, the seed-protocol artefact, and the wording."""
import dataclasses
import math
import re

import pytest

from resreport.cells import Cell
from resreport.config import Config, Thresholds
from resreport.context import build_context
from resreport.findings import all_findings, batchnorm_precedes_output, gradient_findings
from resreport.render import load_tables, make_environment, render_html
from resreport.store import read_json

from conftest import gradient_metrics_table, write_results

FIGURES = {name: f"{name}.png" for name in (
    "gradient_curves_seed", "heatmaps_seed", "autocorr_seed", "gradient_curves_per_sample", "heatmaps_per_sample",
    "autocorr_per_sample", "loss_curves", "confusion")}


def kinds(findings, kind, protocol="seed"):
    return {f.cells[0]: f for f in findings if f.kind == kind and f.protocol == protocol}


def report_text(results_dir, config) -> str:
    """Render the report's HTML (no figures, no PDF) and return its text, whitespace collapsed."""
    tables = load_tables(results_dir)
    findings = all_findings(tables, config.thresholds)
    context = build_context(config, tables, findings, FIGURES, read_json(results_dir / "manifest.json"), None)
    html = render_html(make_environment(), context)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.parametrize("depth, bn_every, expected", [
    (10, 3, True), (4, 3, True), (10, 5, False), (2, 1, True), (75, 1, True), (5, 10, False), (10, None, False),
    (3, 3, False)])
def test_batchnorm_precedes_output_when_it_follows_layer_depth_minus_1(depth, bn_every, expected):
    assert batchnorm_precedes_output(depth, bn_every) is expected


def test_vanishing_cell_quotes_the_factor_per_layer():
    vanishing = kinds(gradient_findings(gradient_metrics_table(), Thresholds()), "vanishing")
    finding = vanishing[Cell(10, None, False)]
    assert finding.numbers["ratio_to_depth2"] == pytest.approx(1e-4)
    assert finding.numbers["per_layer_factor"] == pytest.approx(1e-4 ** (1 / 8))


def test_zero_seed_gradient_with_batchnorm_before_output_is_an_artefact_not_vanishing():
    findings = gradient_findings(gradient_metrics_table(), Thresholds())
    artefacts = kinds(findings, "seed_protocol_artefact")
    assert set(artefacts) == {Cell(10, 3, False), Cell(10, 3, True)}
    assert not set(artefacts) & set(kinds(findings, "vanishing"))
    assert not set(artefacts) & set(kinds(findings, "shattering"))  # rounding noise is not shattering
    assert not kinds(findings, "seed_protocol_artefact", "per_sample")


def test_seed_artefact_over_a_rounding_noise_baseline_is_not_called_exploding():
    # BN every 1: the depth-2 seed cell is itself zero by construction (1.8e-07), so a deeper artefact cell's
    # rounding noise (2.2e-05) is 120 times "the baseline" without any gradient growing (the lab grid's depth 25)
    table = gradient_metrics_table({(2, 1, False): (1.8e-7, 1.0, 0.0, 0.99),
                                    (25, 1, False): (2.2e-5, 1.2e2 + 2, 0.0, -0.05)})
    table = with_per_sample_mean(table, Cell(25, 1, False), 2.5e2)
    findings = gradient_findings(table, Thresholds())
    assert Cell(25, 1, False) in kinds(findings, "seed_protocol_artefact")
    assert Cell(25, 1, False) not in kinds(findings, "exploding")


def test_seed_artefact_is_judged_against_the_cells_own_per_sample_gradient():
    # the lab grid's depth 75, BN every 1, no skip: rounding noise of 3.6 where the nets' own derivatives are 1.4e7
    table = gradient_metrics_table({(2, 1, False): (1.8e-7, 1.0, 0.0, 0.99),
                                    (75, 1, False): (3.6, 2.0e7, 0.0, 0.01)})
    table = with_per_sample_mean(table, Cell(75, 1, False), 1.4e7)
    findings = gradient_findings(table, Thresholds())
    assert Cell(75, 1, False) in kinds(findings, "seed_protocol_artefact")
    assert Cell(75, 1, False) not in kinds(findings, "exploding") | kinds(findings, "shattering")
    same_size = with_per_sample_mean(table, Cell(75, 1, False), 5.0)  # not small next to per_sample: judged as is
    assert Cell(75, 1, False) not in kinds(gradient_findings(same_size, Thresholds()), "seed_protocol_artefact")


def with_per_sample_mean(table, cell, value):
    """Return the table with one cell's per_sample mean |gradient| replaced."""
    rows = ((table["depth"] == cell.depth) & (table["bn_every"] == cell.bn_every) & (table["skip"] == cell.use_skip)
            & (table["protocol"] == "per_sample") & (table["metric"] == "mean_abs_grad"))
    return table.assign(value=table["value"].mask(rows, value))


def test_report_states_the_initialisations_the_tables_hold_not_the_render_config(results_dir):
    # `render` without --quick after `build --quick`: the default config says 30, the tables hold 2 per cell
    text = report_text(results_dir, Config())
    assert "for 2 initialisations" in text
    assert "for 30 initialisations" not in text


def test_artefact_is_reported_with_per_sample_numbers_in_so_many_words(results_dir, config):
    text = report_text(results_dir, config)
    assert "zero by construction" in text
    assert "not vanishing" in text
    assert "depth 10, BN every 3, skip (mean |gradient| 0.0e+00; per_sample: 2.0e+00)" in text


def test_nonfinite_gradients_are_overflow_and_exploding_not_missing_data(results_dir, config):
    findings = gradient_findings(gradient_metrics_table(), Thresholds())
    exploding = kinds(findings, "exploding")
    assert Cell(10, None, True) in exploding
    assert exploding[Cell(10, None, True)].numbers["nonfinite_fraction"] == 0.25
    text = report_text(results_dir, config)
    assert "Exploding: yes." in text
    assert "25.0% of the gradients overflow (non-finite)" in text


def test_low_autocorrelation_is_shattering_and_named_with_its_numbers(results_dir, config):
    shattering = kinds(gradient_findings(gradient_metrics_table(), Thresholds()), "shattering")
    assert set(shattering) == {Cell(5, 3, False)}
    text = report_text(results_dir, config)
    assert "Shattering: yes. 1 cell shatters" in text
    assert "depth 5, BN every 3, no skip (autocorrelation 0.30, 7.0 sign changes per unit of x)" in text


def test_no_shattering_is_claimed_when_every_autocorrelation_is_high(tmp_path, config):
    smooth = {(5, 3, False): (0.8, 0.8, 0.0, 0.93), (10, 3, False): (0.5, 0.5, 0.0, 0.91)}
    findings = gradient_findings(gradient_metrics_table(smooth), Thresholds())
    assert not [f for f in findings if f.kind == "shattering"]
    absence = [f for f in findings if f.kind == "no_shattering" and f.protocol == "seed"]
    assert absence and absence[0].numbers["lag1_autocorr"] >= 0.9
    write_results(tmp_path, metric_overrides=smooth)
    text = report_text(tmp_path, config)
    assert "Shattering: no. No cell shatters: the lowest mean lag-1 autocorrelation is 0.91" in text
    assert "Shattering: yes" not in text


def test_smooth_cell_of_ordinary_size_is_healthy():
    healthy = kinds(gradient_findings(gradient_metrics_table(), Thresholds()), "healthy")
    assert Cell(5, 3, True) in healthy and Cell(10, None, False) not in healthy


def test_protocols_that_disagree_are_named():
    differences = [f for f in gradient_findings(gradient_metrics_table(), Thresholds())
                   if f.kind == "protocol_difference"]
    assert {f.cells[0] for f in differences} == {Cell(10, 3, False), Cell(10, 3, True)}
    assert differences[0].detail == {"seed": "seed_protocol_artefact", "per_sample": "shattering"}


def cifar(results_dir, config):
    return all_findings(load_tables(results_dir), config.thresholds)


def test_overfitting_failed_and_diverged_cells_are_told_apart(results_dir, config):
    findings = cifar(results_dir, config)
    by_kind = {kind: {f.cells[0] for f in findings if f.kind == kind}
               for kind in ("overfitting", "failed_to_train", "diverged")}
    assert by_kind["diverged"] == {Cell(3, 1, True)}
    assert by_kind["failed_to_train"] == {Cell(3, 1, False)}
    assert Cell(3, None, True) in by_kind["overfitting"] and Cell(3, None, False) not in by_kind["overfitting"]
    text = report_text(results_dir, config)
    assert "Failed to train: depth 3, BN every 1, no skip (validation accuracy 51.0%, chance 50%)" in text
    assert "Diverged: depth 3, BN every 1, skip." in text


def test_effect_of_skip_on_the_gap_follows_the_numbers(results_dir, config):
    effect = next(f for f in cifar(results_dir, config) if f.kind == "effect_of_skip")
    without, with_skip = effect.rows
    assert with_skip["gap"] > without["gap"] and effect.detail["direction"] == "increases"
    text = report_text(results_dir, config)
    assert "Effect of skip connections: the mean generalisation gap increases from without skip to with skip" in text


def test_best_model_is_quoted_with_test_accuracy_and_interval(results_dir, config):
    best = next(f for f in cifar(results_dir, config) if f.kind == "best_model")
    assert best.cells == (Cell(5, 1, True),)
    text = report_text(results_dir, config)
    assert "test accuracy of 83.0% (95% interval 81.0% to 85.0%)" in text


def test_no_overfitting_is_said_when_no_gap_is_wide(results_dir, config):
    thresholds = Thresholds(overfit_gap=5.0)
    findings = all_findings(load_tables(results_dir), thresholds)
    assert not [f for f in findings if f.kind == "overfitting"]
    assert [f for f in findings if f.kind == "no_overfitting"][0].numbers["gap"] == pytest.approx(0.5)
    assert math.isfinite(thresholds.overfit_gap)


def test_vanishing_is_worded_with_the_ratio_and_the_factor_per_layer(results_dir, config):
    text = report_text(results_dir, config)
    assert "Vanishing: yes. In 1 cell" in text
    assert "depth 10, no BN, no skip (1.0e-04 of depth 2, a factor 0.316 per layer)" in text


def test_growth_beyond_the_exploding_ratio_without_overflow_is_exploding():
    findings = gradient_findings(gradient_metrics_table({(5, None, True): (500.0, 500.0, 0.0, 0.95)}), Thresholds())
    exploding = kinds(findings, "exploding")
    assert exploding[Cell(5, None, True)].numbers["per_layer_factor"] == pytest.approx(500 ** (1 / 3))


def test_no_exploding_is_said_with_the_largest_ratio_when_nothing_overflows(tmp_path, config):
    calm = {(10, None, True): (5.0, 5.0, 0.0, 0.95), (5, None, True): (2.0, 2.0, 0.0, 0.95)}
    write_results(tmp_path, metric_overrides=calm)
    text = report_text(tmp_path, config)
    assert "Exploding: no. No gradient overflows" in text
    assert "the largest ratio is 5.0e+00 (depth 10, no BN, skip)" in text


def test_effects_smaller_than_the_minimum_difference_are_no_clear_effect(results_dir, config):
    wide_margin = dataclasses.replace(config, thresholds=Thresholds(effect_min_gap=5.0))
    findings = all_findings(load_tables(results_dir), wide_margin.thresholds)
    effects = [f for f in findings if f.kind.startswith("effect_")]
    assert effects and all(f.detail["direction"] == "similar" for f in effects)
    text = report_text(results_dir, wide_margin)
    assert "Effect of skip connections: no clear effect on the generalisation gap" in text
