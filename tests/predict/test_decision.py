"""lib.predict.decision: per-class offsets move the argmax where a label metric gains, and only then."""
import numpy as np
from scipy.special import softmax

from lib.core.metrics import f1_macro
from lib.predict.crossfit import crossfit_blend
from lib.predict.decision import apply_offsets, fit_offsets


def _under_predicted_minority(seed=0, n=900):
    """3 classes, class 2 rare (10%); the model's probabilities for it are shrunk 4x, so its argmax
    seldom says class 2 and macro F1 suffers."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.45, 0.45, 0.10])
    z = rng.normal(0, 1.0, size=(n, 3))
    z[np.arange(n), y] += 1.8
    p = softmax(z, axis=1) * np.array([1.0, 1.0, 0.25])
    return y, p / p.sum(axis=1, keepdims=True)


def test_offsets_raise_macro_f1_of_an_under_predicted_class():
    y, p = _under_predicted_minority()
    b = fit_offsets(p, y, "f1_macro")
    assert b[2] > b[0] and b[2] > b[1]  # the rare class's boundary moves towards it
    assert f1_macro(y, apply_offsets(p, b)) > f1_macro(y, p) + 0.03
    np.testing.assert_allclose(apply_offsets(p, b).sum(axis=1), 1.0)


def test_offsets_stay_at_zero_when_nothing_gains():
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.eye(3)[y] * 0.9 + 0.1 / 3  # already perfect
    np.testing.assert_array_equal(fit_offsets(p, y, "accuracy"), 0.0)


def test_the_decision_layer_is_used_only_when_it_gains_cross_fitted():
    y, p = _under_predicted_minority()
    folds = np.arange(len(y)) % 3
    cf = crossfit_blend([p], y, folds, "f1_macro")
    d = cf.decision.set_index("decision")
    assert d.loc["per-class offsets", "cross_fitted_f1_macro"] > d.loc["argmax", "cross_fitted_f1_macro"]
    assert d.loc["per-class offsets", "used"] and cf.offsets is not None
    assert d.loc["per-class offsets", "win_rate"] >= 0.9


def test_offsets_that_lose_on_held_out_folds_are_not_used():
    """Labels drawn from the predicted probabilities: argmax is already the best decision; offsets
    fitted on two folds lose on the third."""
    rng = np.random.default_rng(0)
    q = softmax(rng.normal(0, 2, size=(600, 3)), axis=1)
    y = np.minimum((q.cumsum(axis=1) < rng.random((600, 1))).sum(axis=1), 2)
    cf = crossfit_blend([q], y, np.arange(600) % 3, "accuracy")
    d = cf.decision.set_index("decision")
    assert d.loc["per-class offsets", "cross_fitted_accuracy"] < d.loc["argmax", "cross_fitted_accuracy"]
    assert not d.loc["per-class offsets", "used"] and d.loc["argmax", "used"] and cf.offsets is None
