"""lib.predict.crossfit: strategies compared on held-out folds; fitted weights are used only when they win
there, and fit_blend reports the cross-fitted score beside the in-sample one."""
import json
import warnings

import numpy as np
import pytest
import yaml
from scipy.special import softmax
from shared import PNG_CLASSES as CLASSES
from shared import oof_table

from lib.core.rundir import find_runs
from lib.predict.calibrate import expected_score
from lib.predict.crossfit import competition_metric, cross_predict, crossfit_blend, fit_blend


def _labels(rng, p):
    return np.minimum((p.cumsum(axis=1) < rng.random((len(p), 1))).sum(axis=1), p.shape[1] - 1)


def _equally_good(seed=0, n=120, c=4, m=6, noise=2.0):
    """m models seeing the same signal through independent noise: equal weights are right, and
    weights fitted on 120 rows fit the noise."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(n, c))
    y = _labels(rng, softmax(z, axis=1))
    return y, [softmax(z + rng.normal(0, noise, size=z.shape), axis=1) for _ in range(m)], np.arange(n) % 3


def _informative_and_noise(seed=0, n=600, c=3):
    rng = np.random.default_rng(seed)
    a = softmax(rng.normal(0, 2, size=(n, c)), axis=1)
    return _labels(rng, a), [a, rng.dirichlet(np.ones(c), size=n)], np.arange(n) % 3


def test_fitted_weights_are_not_used_when_equal_weights_win_on_held_out_folds():
    y, arrs, folds = _equally_good()
    cf = crossfit_blend(arrs, y, folds, "log_loss")
    t = cf.table.set_index("strategy")
    # in-sample the fitted weights always look better: that is the optimism cross-fitting removes
    assert t.loc["fitted", "in_sample_log_loss"] < t.loc["equal", "in_sample_log_loss"]
    assert t.loc["equal", "cross_fitted_log_loss"] < t.loc["fitted", "cross_fitted_log_loss"]
    assert cf.chosen == "equal" and t.loc["equal", "chosen"] and not t.loc["fitted", "chosen"]
    np.testing.assert_allclose(cf.weights, np.full(len(arrs), 1 / len(arrs)))


def test_an_informative_model_wins_cross_fitted_and_takes_the_weight():
    y, arrs, folds = _informative_and_noise()
    cf = crossfit_blend(arrs, y, folds, "log_loss", names=["good", "noise"])
    assert cf.chosen in ("best_single", "fitted") and cf.weights[0] > 0.9
    assert "good=" in cf.table.set_index("strategy").loc[cf.chosen, "weights"]


def test_held_out_rows_are_predicted_by_what_the_other_folds_fitted():
    """Cross-fitted predictions of a fold do not change when that fold's labels change."""
    y, arrs, folds = _equally_good(n=90)
    a = cross_predict("fitted", arrs, y, folds, "log_loss", "prob", True, False)
    y2 = y.copy()
    y2[folds == 0] = (y2[folds == 0] + 1) % 4
    b = cross_predict("fitted", arrs, y2, folds, "log_loss", "prob", True, False)
    np.testing.assert_allclose(a[folds == 0], b[folds == 0])
    assert not np.allclose(a[folds == 1], b[folds == 1])


def test_fit_blend_reports_cross_fitted_scores_from_the_oof_folds():
    y, arrs, folds = _equally_good(c=3, m=3)
    oofs = {f"m{k}": oof_table(y, a, fold=folds) for k, a in enumerate(arrs)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # folds present: no in-sample warning
        b = fit_blend(oofs, CLASSES)
    assert {"in_sample_log_loss", "cross_fitted_log_loss", "fold_sd", "chosen"} <= set(b.crossfit.columns)
    assert b.strategy == b.crossfit.loc[b.crossfit["chosen"], "strategy"].item()
    assert b.cross_probs.shape == b.probs.shape and set(np.unique(b.folds)) == {0, 1, 2}
    assert b.report["model"].iloc[-1] == "calibrated_blend"


def test_fit_blend_without_folds_says_its_score_is_in_sample():
    y, arrs, _ = _equally_good(c=3, m=2)
    oofs = {f"m{k}": oof_table(y, a) for k, a in enumerate(arrs)}  # every row in fold 0
    with pytest.warns(UserWarning, match="same rows"):
        b = fit_blend(oofs, CLASSES)
    assert b.crossfit is None and b.cross_probs is None


def _runs(root, monitors: dict, in_metrics: bool = True):
    """find_runs' table of completed fake runs {run_name: monitor}, the monitor in metrics.json and
    params.yaml (or, without ``in_metrics``, in params.yaml only, as an older metrics.json)."""
    for name, m in monitors.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "params.yaml").write_text(yaml.safe_dump({"fold": int(name[-1]), "monitor": m}))
        (d / "metrics.json").write_text(json.dumps({"complete": True, **({"monitor": m} if in_metrics else {})}))
    return find_runs(root)


def test_the_blend_decision_layer_and_expected_score_use_the_runs_monitor(tmp_path, capsys):
    """A macro-F1 recipe (monitor f1_macro) gets a blend, offsets and an expected score for macro F1,
    not for log loss, without 04 being told twice; 04's print says which metric and why."""
    y, arrs, folds = _equally_good(c=3, m=2)
    oofs = {f"m{k}": oof_table(y, a, fold=folds) for k, a in enumerate(arrs)}
    runs = _runs(tmp_path, {f"m{k}_f{f}": "f1_macro" for k in range(2) for f in range(3)})
    b = fit_blend(oofs, CLASSES, runs=runs)
    assert "blend metric: f1_macro (the monitor of all 6 runs)" in capsys.readouterr().out
    assert b.metric == "f1_macro" and "cross_fitted_f1_macro" in b.crossfit.columns
    assert b.decision is not None and "cross_fitted_f1_macro" in b.decision.columns   # the decision layer ran
    e = expected_score(b)
    assert (e["metric"], e["metric_source"]) == ("f1_macro", "the monitor of all 6 runs")
    given = fit_blend(oofs, CLASSES, "log_loss", runs=runs)                          # 04's blend_metric wins
    assert given.metric == "log_loss" and given.decision is None
    assert "blend metric: log_loss (given; the runs monitor f1_macro (m0_f0, m0_f1, m0_f2, ...))" \
        in capsys.readouterr().out
    assert fit_blend(oofs, CLASSES, verbose=False).metric == "log_loss"              # no runs: log loss
    assert not capsys.readouterr().out


def test_runs_that_monitor_different_metrics_must_be_told_which_one_scores(tmp_path):
    runs = _runs(tmp_path / "a", {"a_f0": "f1_macro", "a_f1": "f1_macro", "b_f0": "accuracy"})
    with pytest.raises(ValueError, match=r"different metrics: f1_macro \(a_f0, a_f1\), accuracy \(b_f0\); say which"):
        competition_metric(runs)
    assert competition_metric(runs, "accuracy")[0] == "accuracy"
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        competition_metric(runs, "auc")
    old = _runs(tmp_path / "b", {"a_f0": "valid_loss", "b_f0": "log_loss"}, in_metrics=False)   # params.yaml
    assert competition_metric(old) == ("log_loss", "the monitor of all 2 runs")                # valid_loss: a loss
    assert competition_metric(None) == ("log_loss", "no run recorded a monitor: log_loss")
