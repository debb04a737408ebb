"""lib.predict.blend: OOF-fitted weights (the informative model wins, never worse than equal or single), the
blend's maths and report, and fit_blend / write_ensemble on a real competition."""
import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from shared import PNG_CLASSES as CLASSES
from shared import oof_table

from lib.core.metrics import log_loss, score
from lib.predict import blend
from lib.predict.crossfit import fit_blend
from lib.predict.submission import validate_submission, write_ensemble


def _sample_labels(rng, probs):
    u = rng.random((len(probs), 1))
    return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1)


def _informative_and_noise(seed=0, n=3000, c=5):
    """Model A is the true distribution of y (calibrated); model B is independent noise."""
    rng = np.random.default_rng(seed)
    a = softmax(rng.normal(0, 2, size=(n, c)), axis=1)
    y = _sample_labels(rng, a)
    b = rng.dirichlet(np.ones(c), size=n)
    return y, a, b


def _two_equal_models(seed=0, n=4000, c=5, noise=1.5):
    """Two models that see the same signal through independent noise of the same size."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(n, c))
    y = _sample_labels(rng, softmax(z, axis=1))
    a = softmax(z + rng.normal(0, noise, size=z.shape), axis=1)
    b = softmax(z + rng.normal(0, noise, size=z.shape), axis=1)
    return y, a, b


@pytest.mark.parametrize("space", ["prob", "logit"])
def test_informative_model_takes_the_weight(space):
    y, a, b = _informative_and_noise()
    w = blend.fit_blend_weights([a, b], y, space=space)
    assert w[0] > 0.95
    # accuracy is a step function: a little noise may flip a row or two on OOF, never much weight
    w = blend.fit_blend_weights([b, a], y, metric="accuracy", space=space)
    assert w[1] > 0.85


@pytest.mark.parametrize("space", ["prob", "logit"])
def test_two_equally_good_models_blend_better_near_half(space):
    y, a, b = _two_equal_models()
    w = blend.fit_blend_weights([a, b], y, space=space)
    assert w == pytest.approx([0.5, 0.5], abs=0.1)
    blended = log_loss(y, blend.blend([a, b], w, space))
    assert blended < min(log_loss(y, a), log_loss(y, b)) - 0.01


@pytest.mark.parametrize("metric", ["log_loss", "accuracy", "f1_macro", "top5"])
@pytest.mark.parametrize("space", ["prob", "logit"])
def test_weights_on_simplex_and_never_worse(metric, space):
    rng = np.random.default_rng(3)
    n, c = 600, 8
    z = rng.normal(0, 2, size=(n, c))
    y = _sample_labels(rng, softmax(z, axis=1))
    oofs = [softmax(z * s + rng.normal(0, sd, size=z.shape), axis=1)
            for s, sd in [(1.0, 1.0), (3.0, 0.5), (0.5, 2.0), (0.0, 1.0)]]
    w = blend.fit_blend_weights(oofs, y, metric=metric, space=space)
    assert w.shape == (4,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    sign = 1 if metric == "log_loss" else -1
    fitted = sign * score(metric, y, blend.blend(oofs, w, space))
    baselines = [sign * score(metric, y, o) for o in oofs]
    baselines.append(sign * score(metric, y, blend.blend(oofs, np.ones(4), space)))
    assert fitted <= min(baselines) + 1e-12


def test_blend_math():
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(3), size=4), rng.dirichlet(np.ones(3), size=4)
    assert np.allclose(blend.blend([a, b], [3, 1]), 0.75 * a + 0.25 * b)
    geo = a ** 0.75 * b ** 0.25
    geo /= geo.sum(axis=1, keepdims=True)
    assert np.allclose(blend.blend([a, b], [0.75, 0.25], space="logit"), geo)
    with pytest.raises(ValueError, match="2 weights for 3"):
        blend.blend([a, b, a], [1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        blend.blend([a, b], [1, -1])
    with pytest.raises(ValueError, match="shape"):
        blend.blend([a, b[:3]], [1, 1])


def test_blend_report_rows_and_columns():
    y, a, b = _two_equal_models(n=500)
    oofs = {"convnext": a, "effnet": b}
    w = blend.fit_blend_weights(list(oofs.values()), y)
    rep = blend.blend_report(oofs, y, w, metric="top5")
    assert list(rep["model"]) == ["convnext", "effnet", "equal_blend", "fitted_blend"]
    assert list(rep.columns) == ["model", "weights", "log_loss", "accuracy", "f1_macro", "top5"]
    assert rep.loc[0, "log_loss"] == pytest.approx(log_loss(y, a))
    assert rep.loc[3, "log_loss"] <= rep["log_loss"].min() + 1e-12


# ---------------------------------------------------------------- submissions


def test_fit_blend_and_write_ensemble(png_comp, tmp_path):
    rng = np.random.default_rng(0)
    y = png_comp.train["target"].to_numpy()
    ids = png_comp.train["id"].to_numpy()
    good = 0.6 * np.eye(3)[y] + 0.4 * rng.dirichlet(np.ones(3), size=len(y))
    noise = rng.dirichlet(np.ones(3), size=len(y))
    oofs = {"good": oof_table(y, good, ids), "noise": oof_table(y, noise, ids).iloc[3:]}  # noise lacks 3 ids
    with pytest.warns(UserWarning, match="share"):
        b = fit_blend(oofs, CLASSES)
    assert len(b.ids) == len(y) - 3 and b.weights.sum() == pytest.approx(1)
    assert b.weights[0] > b.weights[1]
    rep = b.report.set_index("model")
    assert list(b.report["model"])[-1] == "calibrated_blend"
    assert rep.loc["calibrated_blend", "log_loss"] <= rep.loc["fitted_blend", "log_loss"] + 1e-12
    assert rep.loc["fitted_blend", "log_loss"] <= rep.loc["good", "log_loss"] + 1e-9

    test_ids = png_comp.test["id"].to_numpy()
    tests = {m: pd.concat([pd.DataFrame({"id": test_ids}),
                           pd.DataFrame(rng.dirichlet(np.ones(3), size=6), columns=CLASSES)], axis=1)
             for m in ("good", "noise")}
    sub = write_ensemble(b, tests, png_comp, tmp_path, tmp_path / "submission.csv")
    written = pd.read_csv(tmp_path / "submission.csv", dtype={"ID": str})
    validate_submission(written, png_comp.sample_submission)
    assert list(written["ID"]) == list(png_comp.sample_submission["ID"]) and written.shape == sub.shape
    rep = pd.read_csv(tmp_path / "ensemble" / "blend_report.csv")
    assert list(rep.columns) == ["model", "weights", "log_loss", "accuracy", "f1_macro"]
    oof_blend = pd.read_csv(tmp_path / "ensemble" / "oof_blend.csv", dtype={"id": str})
    assert list(oof_blend.columns) == ["id", "target"] + CLASSES and len(oof_blend) == len(b.ids)
    assert log_loss(oof_blend["target"], oof_blend[CLASSES]) == pytest.approx(rep["log_loss"].iloc[-1])
    for m in ("good", "noise"):  # each single model as a submission, for the leaderboard comparison
        single = pd.read_csv(tmp_path / "ensemble" / f"test_{m}.csv", dtype={"ID": str})
        validate_submission(single, png_comp.sample_submission)
        want = tests[m].set_index("id").loc[single["ID"], CLASSES].to_numpy()
        assert np.allclose(single[CLASSES].to_numpy(), want / want.sum(axis=1, keepdims=True))

    del tests["noise"]
    with pytest.raises(ValueError, match="no test predictions for models \\['noise'\\]"):
        write_ensemble(b, tests, png_comp, tmp_path, tmp_path / "submission.csv")
