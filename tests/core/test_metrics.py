import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
from scipy.special import softmax

from lib.core import metrics as M


def _random(seed, n=300, c=7, classes=None):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(c), size=n)
    y = rng.choice(np.arange(c) if classes is None else np.asarray(classes), size=n)
    return y, probs


def _sample_labels(rng, probs):
    """One class index per row drawn from probs [N, C]."""
    u = rng.random((len(probs), 1))
    return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("classes", [None, [0, 2, 5]])
def test_log_loss_matches_sklearn_with_all_labels(seed, classes):
    y, p = _random(seed, classes=classes)
    expected = skm.log_loss(y, p, labels=range(p.shape[1]))
    assert M.log_loss(y, p) == pytest.approx(expected, rel=1e-10)


def test_fold_lacking_classes_scores_all_columns():
    y, p = _random(0, n=50, c=396, classes=range(393))
    with pytest.raises(ValueError):  # the failure users hit without labels=
        skm.log_loss(y, p)
    assert M.log_loss(y, p) == pytest.approx(skm.log_loss(y, p, labels=range(396)), rel=1e-10)


def test_log_loss_clips_exact_zero_and_one():
    p = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    eps = 1e-15
    wrong = -np.log(eps / (1 + eps))          # true class had p = 0
    right = -np.log((1 - eps) / (1 - eps + 2 * eps))  # true class had p = 1
    assert M.log_loss([0, 0], p) == pytest.approx((wrong + right) / 2, rel=1e-12)
    assert np.isfinite(M.log_loss([0, 0], p))
    assert M.log_loss([1, 0], p) < 1e-12


def test_shape_and_label_errors_are_clear():
    y, p = _random(0, n=10, c=4)
    with pytest.raises(ValueError, match="9 labels but probs has 10 rows"):
        M.log_loss(y[:9], p)
    bad = y.copy()
    bad[3] = 4
    with pytest.raises(ValueError, match=r"label 4 .*C=4"):
        M.log_loss(bad, p)
    bad[3] = -1
    with pytest.raises(ValueError, match="label -1"):
        M.accuracy(bad, p)
    with pytest.raises(ValueError, match=r"2-D array \[N, C\]"):
        M.log_loss(y, p[:, 0])


@pytest.mark.parametrize("seed", range(3))
def test_accuracy_topk_f1_match_sklearn(seed):
    y, p = _random(seed, n=400, c=10, classes=range(8))
    pred = p.argmax(axis=1)
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, pred))
    for k in (1, 3, 5):
        assert M.top_k(y, p, k=k) == pytest.approx(
            skm.top_k_accuracy_score(y, p, k=k, labels=range(10)))
    assert M.f1_macro(y, p) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert M.f1_macro(y, pred, num_classes=10) == M.f1_macro(y, p)
    assert M.top_k(y, p, k=10) == 1.0


def test_f1_macro_by_hand_over_present_classes():
    # class 0: tp=1 fn=1 -> 2/3; class 1: tp=2 fp=1 -> 4/5; classes 2, 3 absent from y and pred
    y, pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert M.f1_macro(y, pred, num_classes=4) == pytest.approx((2 / 3 + 4 / 5) / 2)
    with pytest.raises(ValueError, match="label 4"):
        M.f1_macro(y, np.array([0, 1, 4, 1]), num_classes=4)


def _calibration_data(seed, n=20000, c=4, overconfident=False):
    """Top-1 confidence conf with the top class right with probability conf (or conf**4)."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(1 / c + 0.01, 1.0, size=n)
    top = rng.integers(0, c, size=n)
    probs = np.tile(((1 - conf) / (c - 1))[:, None], (1, c))
    probs[np.arange(n), top] = conf
    p_right = conf ** 4 if overconfident else conf
    right = rng.random(n) < p_right
    other = (top + rng.integers(1, c, size=n)) % c
    return np.where(right, top, other), probs


def test_ece_calibrated_is_small_and_overconfident_is_large():
    y, p = _calibration_data(0)
    assert M.ece(y, p) < 0.02
    y2, p2 = _calibration_data(0, overconfident=True)
    assert M.ece(y2, p2) > 0.15


def test_reliability_bins_table():
    y, p = _calibration_data(1, n=2000)
    bins = M.reliability_bins(y, p, n_bins=10)
    assert isinstance(bins, pd.DataFrame) and len(bins) == 10
    assert {"bin", "confidence", "accuracy", "count"} <= set(bins.columns)
    assert bins["count"].sum() == len(y)
    assert bins.loc[:1, "count"].sum() == 0  # top-1 confidence of 4 classes is never <= 0.2
    full = bins[bins["count"] > 0]
    assert (full["confidence"] > full["bin_lower"]).all()
    assert (full["confidence"] <= full["bin_upper"]).all()
    gap = (full["accuracy"] - full["confidence"]).abs() * full["count"] / len(y)
    assert M.ece(y, p, n_bins=10) == pytest.approx(gap.sum())


def test_registry_and_score():
    y, p = _random(2, n=100, c=6)
    assert set(M.METRICS) == {"log_loss", "accuracy", "f1_macro", "top5"}
    assert M.get_metric("log_loss") == (M.log_loss, False) and M.get_metric("accuracy") == (M.accuracy, True)
    assert M.scores(y, p) == {"log_loss": M.log_loss(y, p), "accuracy": M.accuracy(y, p), "f1_macro": M.f1_macro(y, p)}
    assert M.score("top5", y, p) == M.top_k(y, p, k=5)
    assert M.score("log_loss", y, p) == M.log_loss(y, p)
    with pytest.raises(ValueError, match="unknown metric 'auc'.*log_loss"):
        M.score("auc", y, p)


def test_probs_to_logits_roundtrip_matches_metric():
    y, p = _random(3, n=100, c=5)
    p[0] = [1.0, 0, 0, 0, 0]
    back = M.apply_temperature(M.probs_to_logits(p), 1.0)
    assert np.allclose(back.sum(axis=1), 1)
    assert M.log_loss(y, back) == pytest.approx(M.log_loss(y, p), rel=1e-12)
    with pytest.raises(ValueError, match="T must be"):
        M.apply_temperature(p, 0.0)


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(20000, 5))
    y = _sample_labels(rng, softmax(z / 2.0, axis=1))
    T = M.fit_temperature(z, y)
    assert T == pytest.approx(2.0, abs=0.1)
    assert M.log_loss(y, M.apply_temperature(z, T)) < M.log_loss(y, softmax(z, axis=1))


@pytest.mark.parametrize("case", ["calibrated", "random_labels", "separable", "tiny"])
def test_fit_temperature_never_worsens(case):
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, size=(3000, 6))
    if case == "calibrated":
        y = _sample_labels(rng, softmax(z, axis=1))
    elif case == "random_labels":
        y = rng.integers(0, 6, size=len(z))
    elif case == "separable":
        y = z.argmax(axis=1)
    else:
        z, y = z[:3], z[:3].argmin(axis=1)
    T = M.fit_temperature(z, y)
    assert T > 0
    assert M.log_loss(y, M.apply_temperature(z, T)) <= M.log_loss(y, softmax(z, axis=1))
    if case == "calibrated":
        assert T == pytest.approx(1.0, abs=0.1)
    if case == "random_labels":
        assert T > 3  # logits carry no information: flatten them
