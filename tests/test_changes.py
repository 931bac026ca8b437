import math

import pandas as pd

from resreport.changes import compare, key_metrics, to_markdown


def metrics(value, depths=(2, 5)):
    rows = [{"depth": d, "bn_every": pd.NA, "skip": False, "protocol": "seed", "metric": "mean_abs_grad",
             "value": value} for d in depths]
    return {"gradient_metrics": pd.DataFrame(rows)}


def test_unchanged_metrics_report_nothing():
    diff = compare(key_metrics(metrics(1.0)), key_metrics(metrics(1.0 + 1e-9)), rtol=0.05)
    assert diff["moved"] == [] and diff["added"] == [] and diff["removed"] == []


def test_metric_beyond_tolerance_is_reported_with_both_values():
    diff = compare(key_metrics(metrics(1.0)), key_metrics(metrics(1.2)), rtol=0.05)
    assert len(diff["moved"]) == 2
    assert diff["moved"][0]["before"] == 1.0 and math.isclose(diff["moved"][0]["after"], 1.2)


def test_overflow_appearing_counts_as_moved():
    diff = compare(key_metrics(metrics(1.0)), key_metrics(metrics(math.inf)), rtol=0.05)
    assert len(diff["moved"]) == 2


def test_added_and_removed_cells_are_listed():
    diff = compare(key_metrics(metrics(1.0, depths=(2, 5))), key_metrics(metrics(1.0, depths=(2, 10))), rtol=0.05)
    assert diff["added"] == ["gradient_metrics: depth 10, no BN, no skip, seed"]
    assert diff["removed"] == ["gradient_metrics: depth 5, no BN, no skip, seed"]


def test_markdown_says_when_there_is_no_previous_build():
    diff = compare(key_metrics({}), key_metrics(metrics(1.0)), rtol=0.05)
    diff["previous_build"] = None
    assert "No previous build" in to_markdown(diff)


def test_markdown_lists_moved_metrics():
    diff = compare(key_metrics(metrics(1.0)), key_metrics(metrics(2.0)), rtol=0.05)
    diff["previous_build"] = "2026-01-01T00:00:00+00:00"
    text = to_markdown(diff)
    assert "Metrics that moved (2)" in text and "| gradient_metrics | depth 5, no BN, no skip, seed |" in text
