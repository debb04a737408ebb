"""lib.predict.submission: every malformed submission is refused with its reason; rows and columns follow the sample."""
import numpy as np
import pandas as pd
import pytest

from lib.predict import submission
from lib.predict.oof import FOLD_SPACE


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


def _binary_comp(root, labels=("0", "1"), column="label", n=6):
    """A two-class folder competition whose sample asks for one probability column (filled with 0.5)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in labels:
        for i in range(n):
            (root / "train" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "train" / c / f"{c}{i}.png")
    (root / "test").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "test" / f"t{i}.png")
    pd.DataFrame({"id": [f"t{i}" for i in range(4)], column: 0.5}).to_csv(root / "sample_submission.csv", index=False)
    return root


def test_binary_submission_writes_the_positive_class_probability(tmp_path):
    from lib.data.competition import open_competition, open_test_set
    from lib.predict.team import read_prediction

    comp = open_competition(_binary_comp(tmp_path / "c"))
    assert comp.submission == "binary" and comp.classes == ["0", "1"] and comp.positive == 1
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.0, 1.0]])
    sub = submission.make_submission(probs, comp.test["id"], comp.sample_submission, positive=comp.positive)
    assert list(sub.columns) == ["id", "label"]
    np.testing.assert_allclose(sub["label"], [0.1, 0.8, 0.5, 1 - 1e-15])  # P(class "1"), not hard labels
    # without positive= a one-column probability sample is refused, not filled with argmax labels
    with pytest.raises(ValueError, match="binary submission"):
        submission.make_submission(probs, comp.test["id"], comp.sample_submission)
    # the class table carries it to 05 (a hidden test set) and a teammate's file reads back as probabilities
    assert open_test_set(comp.root, comp.class_table()).positive == 1
    kind, table = read_prediction(sub, comp)
    assert kind == "probs"
    np.testing.assert_allclose(table[["0", "1"]].to_numpy()[:3], probs[:3])


def test_binary_submission_of_named_classes_needs_to_know_which_is_positive(tmp_path):
    from lib.data.competition import open_competition

    root = _binary_comp(tmp_path / "ice", labels=("iceberg", "ship"), column="is_iceberg")
    with pytest.raises(ValueError, match="positive_class"):
        open_competition(root)
    comp = open_competition(root, {"positive_class": "iceberg"})
    assert comp.positive == 0
    probs = np.array([[0.7, 0.3]] * 4)
    sub = submission.make_submission(probs, comp.test["id"], comp.sample_submission, positive=comp.positive)
    np.testing.assert_allclose(sub["is_iceberg"], 0.7)


def test_an_unreadable_test_image_costs_its_row_the_class_prior_not_the_submission(tmp_path):
    from lib.data.competition import open_competition

    root = _binary_comp(tmp_path / "c")
    (root / "test" / "t2.png").write_bytes(b"not a png")  # truncated upload, disk error...
    comp = open_competition(root)
    assert comp.unreadable_test_ids == ["t2"] and list(comp.test["id"]) == ["t0", "t1", "t3"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]])
    with pytest.raises(ValueError, match="1 missing"):  # what 04 and 05 did: no submission at all
        submission.make_submission(probs, comp.test["id"], comp.sample_submission, positive=1)
    with pytest.warns(UserWarning, match=r"1 test image\(s\) could not be read.*'t2'.*t2.png"):
        ids, filled = submission.with_unreadable_rows(comp.test["id"], probs, comp)
    sub = submission.make_submission(filled, ids, comp.sample_submission, positive=1)
    np.testing.assert_allclose(sub["label"], [0.1, 0.8, 0.5, 0.6])  # t2: the training prior (6 and 6 images)


def test_blend_json_records_whether_the_temperature_was_fitted_and_how_folds_were_averaged(tmp_path):
    import json

    from shared import PNG_CLASSES, oof_table

    from lib.predict.crossfit import fit_blend

    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    oofs = {"m": oof_table(y, rng.dirichlet(np.ones(3), size=60), fold=np.arange(60) % 2)}
    runs = pd.DataFrame({"run_name": ["m_f0", "m_f1"], "model": "m"})
    table = {"classes": PNG_CLASSES}
    for fitted in (True, False):
        b = fit_blend(oofs, PNG_CLASSES, temperature=fitted)
        path = submission.save_blend(b, tmp_path / f"blend_{fitted}.json", runs, ["identity"], "prob", table)
        assert submission.load_blend(path)["temperature_fitted"] is fitted
    # a blend.json from before the field: fitted unless its OOF temperature is 1 (what 04 then assumed)
    for T, fitted in ((1.3, True), (1.0, False)):
        plan = json.loads((tmp_path / "blend_True.json").read_text())
        del plan["temperature_fitted"]
        (tmp_path / "old.json").write_text(json.dumps({**plan, "oof_temperature": T}))
        assert submission.load_blend(tmp_path / "old.json")["temperature_fitted"] is fitted
    # how the fold models were averaged, which the temperature was fitted to (05 averages them the same way,
    # a blend.json written while 04 averaged logits included); a blend.json from before the field: probabilities
    assert submission.load_blend(tmp_path / "blend_True.json")["fold_space"] == FOLD_SPACE
    plan = json.loads((tmp_path / "blend_True.json").read_text())
    (tmp_path / "logit.json").write_text(json.dumps({**plan, "fold_space": "logit"}))
    assert submission.load_blend(tmp_path / "logit.json")["fold_space"] == "logit"
    del plan["fold_space"]
    (tmp_path / "old.json").write_text(json.dumps(plan))
    assert submission.load_blend(tmp_path / "old.json")["fold_space"] == "prob"
