"""lib.predict.submission: every malformed submission is refused with its reason; rows and columns follow the sample."""
import numpy as np
import pandas as pd
import pytest

from lib.predict import submission


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
    assert submission.validate_submission(_good(sample), sample) is None


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
            submission.validate_submission(sub, sample)


def test_validator_names_id_dtype_mismatch():
    sample = pd.DataFrame({"id": [1, 2, 3], "a": 0.5, "b": 0.5})
    sub = sample.assign(id=["1", "2", "3"])
    with pytest.raises(ValueError, match="match only as text"):
        submission.validate_submission(sub, sample)


def test_make_submission_reorders_rows_and_clips(tmp_path):
    sample = _sample()
    good = _good(sample)
    order = np.array([3, 0, 5, 1, 4, 2])
    probs = good[["cat", "dog", "fox"]].to_numpy()[order]
    probs[0] = [1.0, 0.0, 0.0]
    sub = submission.make_submission(probs, good["image_id"].to_numpy()[order], sample)
    assert list(sub.columns) == list(sample.columns)
    assert list(sub["image_id"]) == list(sample["image_id"])
    expected = good[["cat", "dog", "fox"]].to_numpy().copy()
    assert np.allclose(sub.loc[sub.image_id != "img3", ["cat", "dog", "fox"]],
                       np.delete(expected, 3, axis=0))
    row3 = sub.loc[sub.image_id == "img3", ["cat", "dog", "fox"]].to_numpy()[0]
    assert row3.min() > 0 and row3.max() < 1 and row3.sum() == pytest.approx(1)
    path = submission.write_submission(sub, tmp_path / "submission.csv", sample)
    back = pd.read_csv(path)
    assert list(back["image_id"]) == list(sample["image_id"])
    assert np.allclose(back[["cat", "dog", "fox"]], sub[["cat", "dog", "fox"]])


def test_make_and_write_submission_refuse_bad_input(tmp_path):
    sample = _sample()
    good = _good(sample)
    p = good[["cat", "dog", "fox"]].to_numpy()
    with pytest.raises(ValueError, match="1 missing.*'img5'"):
        submission.make_submission(p[:5], good["image_id"][:5], sample)
    with pytest.raises(ValueError, match=r"must be \[N, 3\]"):
        submission.make_submission(p[:, :2], good["image_id"], sample)
    with pytest.raises(ValueError, match="duplicate ids"):
        submission.make_submission(p, ["img0"] * 6, sample)
    target = tmp_path / "submission.csv"
    with pytest.raises(ValueError, match="missing columns"):
        submission.write_submission(good.drop(columns="fox"), target, sample)
    assert not target.exists()
