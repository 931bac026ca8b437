"""Check the gradient metrics on hand-made curves whose answers are known."""
import math

import numpy as np
import pandas as pd
import pytest

from resreport import gradient_metrics as gm

X = np.linspace(-3, 3, 256)
X_SPAN = 6.0


def sine_curves(n_inits: int = 3, frequency: float = 2.0) -> np.ndarray:
    """Return n_inits phase-shifted sines along X; shape (n_inits, 256)."""
    return np.stack([np.sin(frequency * X + phase) for phase in np.linspace(0, 1, n_inits)])


def test_sine_lag1_autocorr_is_cos_of_the_phase_step():
    step = X[1] - X[0]
    expected = math.cos(2.0 * step)  # a sine's autocorrelation at lag 1 is cos(omega * dx), up to edge effects
    assert gm.lag1_autocorr(sine_curves()) == pytest.approx(expected, abs=0.01)
    assert gm.lag1_autocorr_of_mean(sine_curves()) == pytest.approx(expected, abs=0.01)


def test_white_noise_has_lag1_autocorr_near_zero():
    noise = np.random.default_rng(0).standard_normal((30, 256))
    assert abs(gm.lag1_autocorr(noise)) < 0.05  # mean of 30 estimates, each with sd 1/sqrt(256)


def test_alternating_sign_curve_has_autocorr_minus_one_and_a_change_at_every_step():
    alternating = np.tile([1.0, -1.0], 128)[None, :]
    assert gm.lag1_autocorr(alternating) == pytest.approx(-1.0, abs=0.01)
    assert gm.autocorr_lag(alternating, 2) == pytest.approx(1.0, abs=0.01)
    assert gm.sign_changes_per_unit(alternating, X_SPAN) == pytest.approx(255 / X_SPAN)


def test_constant_curves_have_undefined_autocorrelation():
    constant = np.full((4, 256), 0.37, dtype=np.float32)
    constant[1] += np.float32(1e-8)  # float32 rounding-level wiggle still counts as constant
    assert math.isnan(gm.lag1_autocorr(constant))
    assert math.isnan(gm.lag1_autocorr_of_mean(constant))
    assert math.isnan(gm.autocorr_lag(np.zeros((2, 256)), 3))
    assert gm.sign_changes_per_unit(constant, X_SPAN) == 0.0


def test_constant_curve_is_left_out_of_the_mean_over_inits():
    curves = np.vstack([sine_curves(1), np.full((1, 256), 2.0)])
    assert gm.lag1_autocorr(curves) == pytest.approx(gm.lag1_autocorr(sine_curves(1)))


def test_curve_with_inf_is_counted_and_left_out():
    curves = sine_curves(2)
    curves[1, 10] = np.inf
    assert gm.nonfinite_fraction(curves) == pytest.approx(1 / 512)
    assert gm.lag1_autocorr(curves) == pytest.approx(gm.lag1_autocorr(curves[:1]))
    assert gm.mean_abs_grad(curves) == pytest.approx(np.abs(np.delete(curves.ravel(), 256 + 10)).mean())
    assert np.isfinite(gm.median_abs_grad(curves))


def test_all_nonfinite_cell_reports_nan_without_warnings():
    curves = np.full((3, 256), np.nan)
    with np.errstate(all="raise"):
        metrics = gm.cell_metrics(curves, X_SPAN, max_lag=8)
    assert metrics["nonfinite_fraction"] == 1.0
    assert all(math.isnan(value) for name, value in metrics.items() if name != "nonfinite_fraction")


def test_sign_changes_per_unit_counts_strict_sign_flips_per_unit_of_x():
    curve = np.ones((1, 256))
    curve[0, 100:200] = -1.0  # two flips
    curve[0, 220] = 0.0  # a zero is not a flip
    assert gm.sign_changes_per_unit(curve, X_SPAN) == pytest.approx(2 / X_SPAN)


def test_mean_and_median_abs_grad():
    curves = np.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]])
    assert gm.mean_abs_grad(curves) == pytest.approx(3.5)
    assert gm.median_abs_grad(curves) == pytest.approx(3.5)


def test_cell_metrics_reports_every_metric_but_the_ratio():
    metrics = gm.cell_metrics(sine_curves(), X_SPAN, max_lag=8)
    assert list(metrics) == [name for name in gm.METRIC_NAMES if name != "ratio_to_depth2"]
    assert metrics["autocorr_lag_1"] == metrics["lag1_autocorr"]


def test_ratio_to_depth2_divides_by_the_matching_depth2_cell():
    rows = [(2, None, False, "seed", 2.0), (10, None, False, "seed", 8.0), (10, None, False, "per_sample", 1.0),
            (2, 3, True, "seed", 0.0), (10, 3, True, "seed", 1.0), (10, 5, True, "seed", 1.0)]
    metrics = pd.DataFrame(rows, columns=["depth", "bn_every", "skip", "protocol", "value"]).assign(
        metric="mean_abs_grad")
    metrics["bn_every"] = metrics["bn_every"].astype("Int64")
    ratios = gm.add_ratio_to_depth2(metrics).query("metric == 'ratio_to_depth2'")
    values = dict(zip(zip(ratios["depth"], ratios["bn_every"].fillna(-1), ratios["protocol"]), ratios["value"]))
    assert values[(2, -1, "seed")] == 1.0
    assert values[(10, -1, "seed")] == 4.0
    assert math.isnan(values[(10, -1, "per_sample")])  # no depth-2 per_sample baseline
    assert math.isnan(values[(10, 3, "seed")])  # zero baseline
    assert math.isnan(values[(10, 5, "seed")])  # absent baseline
    assert len(ratios) == len(metrics)


def test_convention_sentence_is_exported_for_the_report():
    assert "NaN" in gm.CONSTANT_CURVE_CONVENTION and "constant" in gm.CONSTANT_CURVE_CONVENTION
