"""lib.predict.calibrate: the submitted fold mean gets the OOF temperature scaled by how much less
noisy it is than one fold model, from the fold models' spread on the test images (no test label read): scored
against the held-back labels it is calibrated (extra temperature in 0.9-1.1) where one fold model's sharpness
left it too soft; the evidence; the expected score and its interval; a fitted T of 1 is still scaled;
pseudo-labelled students are named and keep the OOF temperature."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from shared import PNG_CLASSES as CLASSES
from shared import oof_table

from lib.core.metrics import fit_temperature, log_loss, probs_to_logits
from lib.predict.blend import blend_test
from lib.predict.calibrate import calibrate_test, ensemble_temperature, expected_score
from lib.predict.crossfit import fit_blend
from lib.predict.oof import fold_mean

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
    tests = {"m": fold_mean([run_tests[r][["id", *CLASSES]] for r in runs["run_name"]], runs["dir"], CLASSES)}
    oofs = {"m": oof_table(y_oof, oof, fold=np.arange(n_oof) % K)}
    return oofs, tests, runs, run_tests, members, y_test


@pytest.mark.parametrize("seed", [0, 1])
def test_the_submitted_fold_mean_is_calibrated_on_the_labels_it_never_read(seed):
    noise = 1.0  # fold models disagree by 2/3 of the signal's spread (at 2.5, more than it, extra T ~1.3: docs)
    oofs, tests, runs, run_tests, members, y_test = _world(seed, n_oof=3000, n_test=20000, noise=noise)
    b = fit_blend(oofs, CLASSES)
    cal, evidence = calibrate_test(b, tests, runs, CLASSES, run_tests)
    _, submitted = blend_test(cal, tests, CLASSES)
    _, before = blend_test(b, tests, CLASSES)                              # the OOF temperature alone
    # scored against the held-back labels: the extra temperature they would want is about 1
    extra = fit_temperature(probs_to_logits(submitted), y_test)
    assert 0.9 < extra < 1.1, f"seed {seed}: the submission wants an extra temperature of {extra:.3f}"
    assert log_loss(y_test, submitted) < log_loss(y_test, before)
    # the fold mean is less noisy than one fold model: sharper than the OOF temperature makes it
    assert cal.test_temperature < b.temperature
    ev = evidence.set_index("predictions")
    assert len(ev) == 5 and ev["T"].iloc[4] == pytest.approx(cal.test_temperature, abs=1e-4)
    assert ev["mean_entropy"].iloc[4] < ev["mean_entropy"].iloc[3]       # sharper than at the OOF temperature
    assert 0 < ev["logit_var"].iloc[2] < ev["logit_var"].iloc[1]          # the noise: part of one fold model's variance


def test_where_the_fold_models_agree_the_oof_temperature_stays():
    _, _, _, _, members, _ = _world(n_test=300)
    same, ev = ensemble_temperature(1.7, [members[0]] * 3, members[0])
    assert same == pytest.approx(1.7) and ev["noise_var"] == pytest.approx(0.0, abs=1e-12)
    # the more fold models are averaged, the less noisy their mean and the more it is sharpened
    two, _ = ensemble_temperature(1.7, members[:2], np.mean(members[:2], axis=0))
    three, _ = ensemble_temperature(1.7, members, np.mean(members, axis=0))
    assert three < two < 1.7
    with pytest.raises(ValueError, match="at least 2 members"):
        ensemble_temperature(1.7, members[:1], members[0])


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


def test_a_fitted_temperature_of_exactly_one_is_still_scaled_on_test():
    oofs, tests, runs, run_tests, members, _ = _world(n_test=300)
    b = dataclasses.replace(fit_blend(oofs, CLASSES), temperature=1.0)     # fitted, and it came out 1.0
    assert b.temperature_fitted
    cal, evidence = calibrate_test(b, tests, runs, CLASSES, run_tests)
    want, _ = ensemble_temperature(1.0, members, tests["m"][CLASSES].to_numpy())  # one fold model at T = 1
    assert cal.test_temperature == pytest.approx(want) and want < 1.0 and len(evidence) == 5


def _run_folders(root, runs, run_tests, pseudo=()):
    """``runs`` as run folders under ``root`` (params.yaml, test.csv), the models in ``pseudo`` trained with
    pseudo_labels; returns the runs table pointing at them."""
    dirs = []
    for r in runs.itertuples():
        d = root / r.run_name
        d.mkdir(parents=True)
        pl = "pseudo_labels: runs/teacher_test.csv\n" if r.model in pseudo else ""
        (d / "params.yaml").write_text(f"backbone: test_resnet\nfold: {r.fold}\nn_folds: {K}\nrun_name: {r.run_name}\n"
                                       + pl)
        run_tests[r.run_name][["id", *CLASSES]].to_csv(d / "test.csv", index=False)
        dirs.append(str(d))
    return runs.assign(dir=dirs)


def test_pseudo_labelled_students_are_named_and_keep_the_oof_temperature(tmp_path):
    oofs, tests, runs, run_tests, _, _ = _world(n_test=300)
    # a second model "st": a student of pseudo-labels on the same test images (its own noise)
    rng = np.random.default_rng(9)
    st_runs = runs.assign(model="st", run_name=[f"st_f{k}" for k in range(K)])
    for k, name in enumerate(st_runs["run_name"]):
        p = run_tests[f"m_f{k}"][CLASSES].to_numpy()
        run_tests[name] = pd.DataFrame(softmax(np.log(p) + rng.normal(0, 0.3, p.shape), axis=1), columns=CLASSES
                                       ).assign(id=run_tests[f"m_f{k}"]["id"])
    tests["st"] = pd.DataFrame(np.mean([run_tests[n][CLASSES].to_numpy() for n in st_runs["run_name"]], axis=0),
                               columns=CLASSES).assign(id=tests["m"]["id"])
    oofs["st"] = oofs["m"].assign(**{c: oofs["m"][c] * 0.9 + 0.1 / len(CLASSES) for c in CLASSES})
    runs = _run_folders(tmp_path, pd.concat([runs, st_runs], ignore_index=True), run_tests, pseudo=("st",))
    b = fit_blend(oofs, CLASSES, metric="log_loss")
    b = dataclasses.replace(b, weights=np.array([0.5, 0.5]))              # both in the blend
    with pytest.warns(UserWarning, match=r"runs \['st_f0', 'st_f1', 'st_f2'\] trained on pseudo-labelled"):
        cal, evidence = calibrate_test(b, tests, runs, CLASSES)
    assert cal.pseudo_labelled == ("st_f0", "st_f1", "st_f2") and cal.test_temperature is None and len(evidence) == 1
    with pytest.warns(UserWarning, match=r"expected score: runs \['st_f0', 'st_f1', 'st_f2'\]"):
        expected = expected_score(cal, n_test=300)
    assert expected["pseudo_labelled"] == ["st_f0", "st_f1", "st_f2"] and "does not apply" in expected["basis"]
    # without the student the same runs calibrate as before, and the score applies
    alone = dataclasses.replace(b, weights=np.array([1.0, 0.0]))
    cal, _ = calibrate_test(alone, tests, runs, CLASSES)
    assert cal.pseudo_labelled == () and cal.test_temperature is not None
    assert expected_score(cal, n_test=300)["pseudo_labelled"] == []
