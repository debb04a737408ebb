import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from lib import ensemble as E
from lib.metrics import log_loss, score


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
    w = E.fit_blend_weights([a, b], y, space=space)
    assert w[0] > 0.95
    # accuracy is a step function: a little noise may flip a row or two on OOF, never much weight
    w = E.fit_blend_weights([b, a], y, metric="accuracy", space=space)
    assert w[1] > 0.85


@pytest.mark.parametrize("space", ["prob", "logit"])
def test_two_equally_good_models_blend_better_near_half(space):
    y, a, b = _two_equal_models()
    w = E.fit_blend_weights([a, b], y, space=space)
    assert w == pytest.approx([0.5, 0.5], abs=0.1)
    blended = log_loss(y, E.blend([a, b], w, space))
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
    w = E.fit_blend_weights(oofs, y, metric=metric, space=space)
    assert w.shape == (4,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    sign = 1 if metric == "log_loss" else -1
    fitted = sign * score(metric, y, E.blend(oofs, w, space))
    baselines = [sign * score(metric, y, o) for o in oofs]
    baselines.append(sign * score(metric, y, E.blend(oofs, np.ones(4), space)))
    assert fitted <= min(baselines) + 1e-12


def test_blend_math():
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(3), size=4), rng.dirichlet(np.ones(3), size=4)
    assert np.allclose(E.blend([a, b], [3, 1]), 0.75 * a + 0.25 * b)
    geo = a ** 0.75 * b ** 0.25
    geo /= geo.sum(axis=1, keepdims=True)
    assert np.allclose(E.blend([a, b], [0.75, 0.25], space="logit"), geo)
    with pytest.raises(ValueError, match="2 weights for 3"):
        E.blend([a, b, a], [1, 1])
    with pytest.raises(ValueError, match=">= 0"):
        E.blend([a, b], [1, -1])
    with pytest.raises(ValueError, match="shape"):
        E.blend([a, b[:3]], [1, 1])


def test_blend_report_rows_and_columns():
    y, a, b = _two_equal_models(n=500)
    oofs = {"convnext": a, "effnet": b}
    w = E.fit_blend_weights(list(oofs.values()), y)
    rep = E.blend_report(oofs, y, w, metric="top5")
    assert list(rep["model"]) == ["convnext", "effnet", "equal_blend", "fitted_blend"]
    assert list(rep.columns) == ["model", "weights", "log_loss", "accuracy", "f1_macro", "top5"]
    assert rep.loc[0, "log_loss"] == pytest.approx(log_loss(y, a))
    assert rep.loc[3, "log_loss"] <= rep["log_loss"].min() + 1e-12


# ---------------------------------------------------------------- submissions

def _sample(n=6, classes=("cat", "dog", "fox")):
    return pd.DataFrame({"image_id": [f"img{i}" for i in range(n)],
                         **{c: 1 / len(classes) for c in classes}})


def _good(sample):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(sample.shape[1] - 1), size=len(sample))
    sub = sample.copy()
    sub[sample.columns[1:]] = p
    return sub


def test_validator_accepts_a_good_submission():
    sample = _sample()
    assert E.validate_submission(_good(sample), sample) is None


def _broken_cases(sample):
    good = _good(sample)
    cases = {}
    cases["missing IDs.*'img5'"] = good.iloc[:-1]
    extra = pd.concat([good, good.iloc[[0]].assign(image_id="zzz")], ignore_index=True)
    cases["unknown IDs.*'zzz'"] = extra
    cases["duplicate IDs.*'img0'"] = pd.concat([good, good.iloc[[0]]], ignore_index=True)
    cases["row order differs.*row 0 has ID 'img1'"] = good.iloc[[1, 0, 2, 3, 4, 5]]
    cases["missing columns: 'fox'"] = good.drop(columns="fox")
    cases["extra columns.*'wolf'"] = good.assign(wolf=0.0)
    cases["columns reordered.*'dog'"] = good[["image_id", "dog", "cat", "fox"]]
    nan = good.copy()
    nan.loc[2, "dog"] = np.nan
    cases[r"1 NaN/inf values, first at row 2 \(ID 'img2'\) column 'dog'"] = nan
    inf = good.copy()
    inf.loc[4, "cat"] = np.inf
    cases["NaN/inf.*'cat'"] = inf
    neg = good.copy()
    neg.loc[1, ["cat", "dog"]] = [-0.1, neg.loc[1, "dog"] + 0.1 + neg.loc[1, "cat"]]
    cases[r"1 values outside \[0, 1\].*min -0.1"] = neg
    big = good.copy()
    big.loc[1, ["cat", "dog", "fox"]] = [1.5, -0.25, -0.25]
    cases[r"3 values outside \[0, 1\].*max 1.5"] = big
    off = good.copy()
    off.loc[3, "cat"] += 0.2
    off.loc[5, "fox"] += 1e-3
    cases["2 rows do not sum to 1.*worst is row 3"] = off
    text = good.copy()
    text["dog"] = text["dog"].astype(str)
    cases["non-numeric probability columns: 'dog'"] = text
    return cases


def test_validator_refuses_each_broken_case_with_its_message():
    sample = _sample()
    for pattern, sub in _broken_cases(sample).items():
        with pytest.raises(ValueError, match=pattern):
            E.validate_submission(sub, sample)


def test_validator_names_id_dtype_mismatch():
    sample = pd.DataFrame({"id": [1, 2, 3], "a": 0.5, "b": 0.5})
    sub = sample.assign(id=["1", "2", "3"])
    with pytest.raises(ValueError, match="match only as text"):
        E.validate_submission(sub, sample)


def test_make_submission_reorders_rows_and_clips(tmp_path):
    sample = _sample()
    good = _good(sample)
    order = np.array([3, 0, 5, 1, 4, 2])
    probs = good[["cat", "dog", "fox"]].to_numpy()[order]
    probs[0] = [1.0, 0.0, 0.0]
    sub = E.make_submission(probs, good["image_id"].to_numpy()[order], sample)
    assert list(sub.columns) == list(sample.columns)
    assert list(sub["image_id"]) == list(sample["image_id"])
    expected = good[["cat", "dog", "fox"]].to_numpy().copy()
    assert np.allclose(sub.loc[sub.image_id != "img3", ["cat", "dog", "fox"]],
                       np.delete(expected, 3, axis=0))
    row3 = sub.loc[sub.image_id == "img3", ["cat", "dog", "fox"]].to_numpy()[0]
    assert row3.min() > 0 and row3.max() < 1 and row3.sum() == pytest.approx(1)
    path = E.write_submission(sub, tmp_path / "submission.csv", sample)
    back = pd.read_csv(path)
    assert list(back["image_id"]) == list(sample["image_id"])
    assert np.allclose(back[["cat", "dog", "fox"]], sub[["cat", "dog", "fox"]])


def test_make_and_write_submission_refuse_bad_input(tmp_path):
    sample = _sample()
    good = _good(sample)
    p = good[["cat", "dog", "fox"]].to_numpy()
    with pytest.raises(ValueError, match="1 missing.*'img5'"):
        E.make_submission(p[:5], good["image_id"][:5], sample)
    with pytest.raises(ValueError, match=r"must be \[N, 3\]"):
        E.make_submission(p[:, :2], good["image_id"], sample)
    with pytest.raises(ValueError, match="duplicate ids"):
        E.make_submission(p, ["img0"] * 6, sample)
    target = tmp_path / "submission.csv"
    with pytest.raises(ValueError, match="missing columns"):
        E.write_submission(good.drop(columns="fox"), target, sample)
    assert not target.exists()
