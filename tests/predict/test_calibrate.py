"""lib.predict.calibrate: the submitted fold mean is made as sharp as one calibrated fold model on the same
test images (no test label read), with the evidence; the expected score and its interval."""
import numpy as np
import pandas as pd
import pytest
from conftest import PNG_CLASSES as CLASSES
from conftest import oof_table
from scipy.special import softmax

from lib.core.metrics import fit_temperature, log_loss, probs_to_logits
from lib.predict.blend import blend_test
from lib.predict.calibrate import calibrate_test, expected_score, mean_entropy
from lib.predict.crossfit import fit_blend

K = 3


def _world(seed=0, n_oof=900, n_test=3000, noise=1.5):
    """Fold models see the true logits through their own noise. OOF rows: one fold model each;
    test rows: every fold model. Labels are drawn from the truth; the test ones are only scored."""
    rng = np.random.default_rng(seed)

    def draw(n):
        z = rng.normal(0, 1.5, size=(n, len(CLASSES)))
        y = np.minimum((softmax(z, axis=1).cumsum(axis=1) < rng.random((n, 1))).sum(axis=1), len(CLASSES) - 1)
        return z, y
    z_oof, y_oof = draw(n_oof)
    oof = softmax(z_oof + rng.normal(0, noise, size=z_oof.shape), axis=1)
    z_test, y_test = draw(n_test)
    members = [softmax(z_test + rng.normal(0, noise, size=z_test.shape), axis=1) for _ in range(K)]
    ids = [f"t{i:04d}" for i in range(n_test)]
    run_tests = {f"m_f{k}": pd.DataFrame(p, columns=CLASSES).assign(id=ids) for k, p in enumerate(members)}
    runs = pd.DataFrame({"run_name": list(run_tests), "model": "m", "fold": range(K), "dir": "-"})
    tests = {"m": pd.DataFrame(np.mean(members, axis=0), columns=CLASSES).assign(id=ids)}
    oofs = {"m": oof_table(y_oof, oof, fold=np.arange(n_oof) % K)}
    return oofs, tests, runs, run_tests, members, y_test


def test_the_fold_mean_gets_the_sharpness_of_one_calibrated_fold_model():
    oofs, tests, runs, run_tests, members, y_test = _world()
    b = fit_blend(oofs, CLASSES)
    cal, evidence = calibrate_test(b, tests, runs, CLASSES, run_tests)
    target = np.mean([mean_entropy(softmax(probs_to_logits(p) / b.temperature, axis=1)) for p in members])
    _, submitted = blend_test(cal, tests, CLASSES)
    assert mean_entropy(submitted) == pytest.approx(target, abs=1e-4)
    # averaging disagreeing fold models softens: the test temperature sharpens beyond the OOF one
    assert cal.test_temperature < b.temperature
    ev = evidence.set_index("predictions")
    assert len(ev) == 4 and ev["mean_entropy"].iloc[2] > ev["mean_entropy"].iloc[1]
    assert ev["mean_entropy"].iloc[3] == pytest.approx(ev["mean_entropy"].iloc[1], abs=1e-4)
    # scored against the held-back labels: what is submitted now loses less than with the OOF T
    _, before = blend_test(b, tests, CLASSES)
    assert log_loss(y_test, submitted) < log_loss(y_test, before)
    extra_before = fit_temperature(probs_to_logits(before), y_test)
    extra_after = fit_temperature(probs_to_logits(submitted), y_test)
    assert abs(np.log(extra_after)) < abs(np.log(extra_before))


def test_without_a_temperature_nothing_changes():
    oofs, tests, runs, run_tests, _, _ = _world(n_test=300)
    b = fit_blend(oofs, CLASSES, temperature=False)
    cal, evidence = calibrate_test(b, tests, runs, CLASSES, run_tests)
    assert cal.test_temperature is None and len(evidence) == 1


def test_expected_score_interval_widens_for_a_smaller_test_set():
    oofs, *_ = _world(n_test=10)
    b = fit_blend(oofs, CLASSES)
    big, small = expected_score(b, n_test=5000), expected_score(b, n_test=100)
    assert big["basis"] == "cross-fitted OOF" and big["metric"] == "log_loss"
    assert big["expected"] == pytest.approx(log_loss(b.y, b.cross_probs))
    assert big["low"] < big["expected"] < big["high"]
    assert small["high"] - small["low"] > big["high"] - big["low"]
    assert small["test_sampling_sd"] > 3 * big["test_sampling_sd"] and big["fold_sd"] == small["fold_sd"] > 0
