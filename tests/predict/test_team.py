"""lib.predict.team: two local runs blended with a teammate's probability submission (with its OOF) and another's
label submission on a document-style label competition; the vote and its tie-break on known rows, given
weights, the agreement table, the written submission, and bad files refused by name. On a table-only
competition of fold models that see the truth through noise: the team blend is calibrated as the local
submission is (test temperature, decision offsets), cross-fitted over folds.csv, and a teammate's finished
submission enters untempered."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from shared import PNG_CLASSES, as_document_competition, oof_table

from lib.core.config import TrainConfig
from lib.data.competition import Competition, open_competition
from lib.predict.blend import blend_test
from lib.predict.calibrate import calibrate_test
from lib.predict.crossfit import fit_blend
from lib.predict.oof import load_test, open_runs
from lib.predict.submission import validate_submission
from lib.predict.team import read_member, team_blend, write_team_submission
from lib.train.loop import train_fold

TINY = dict(img_size=16, batch_size=32, epochs=1, n_folds=2, fold=0, progress=False, verbose=False, num_workers=0)
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)


@pytest.fixture(scope="module")
def team_setup(_digits_source, tmp_path_factory):
    """(data, local runs folder, the teammates' folder): two local models and a teammate's run, all fold 0."""
    tmp = tmp_path_factory.mktemp("team")
    data = as_document_competition(_digits_source, tmp / "docs", n_test=40)
    runs, mates = tmp / "runs", tmp / "mates"
    for name, seed in (("res", 42), ("alt", 3)):
        train_fold(TrainConfig(data_dir=str(data), backbone="test_resnet", seed=seed, run_name=f"{name}_f0",
                               runs_dir=str(runs), **TINY))
    train_fold(TrainConfig(data_dir=str(data), backbone="test_resnet", seed=7, run_name="kim_f0",
                           runs_dir=str(mates), **TINY))
    return data, runs, mates


def _as_submission(test_csv, path):
    """A run's test.csv as a teammate sends it: the sample's ID column name, probabilities per class."""
    df = pd.read_csv(test_csv, dtype={"id": str}).rename(columns={"id": "ID"})
    df.to_csv(path, index=False)
    return path


def test_two_runs_a_probability_file_and_a_label_file_make_one_submission(team_setup, tmp_path):
    data, runs, mates = team_setup
    comp, found, oofs = open_runs(data, runs)
    tests = load_test(found, comp.classes)
    kim = _as_submission(mates / "kim_f0" / "test.csv", tmp_path / "kim_probs.csv")
    # the local blend's labels, with rows 3, 7 and 11 changed: the teammate "lee" disagrees there
    alone = team_blend(oofs, tests, comp, [{"path": kim, "oof": mates / "kim_f0" / "oof.csv", "name": "kim"}],
                       runs=found)
    lee = alone.labels.copy()
    changed = [3, 7, 11]
    lee[changed] = (lee[changed] + 1) % comp.num_classes
    values = np.asarray(comp.label_values)
    pd.DataFrame({"ID": alone.ids, "target": values[lee]}).to_csv(tmp_path / "lee.csv", index=False)

    external = [{"path": str(kim), "oof": str(mates / "kim_f0" / "oof.csv"), "name": "kim"},
                {"path": str(tmp_path / "lee.csv"), "name": "lee"}]
    tie = team_blend(oofs, tests, comp, external, runs=found)          # lee's 1 vote against the blend's 1: a tie
    assert np.array_equal(tie.labels, alone.labels) and tie.overruled == 0
    external[1]["weight"] = 2
    team = team_blend(oofs, tests, comp, external, runs=found)         # 2 against 1: lee wins where they differ
    assert np.array_equal(team.labels, lee) and team.overruled == len(changed)
    assert sorted(team.blend.models) == ["alt", "kim", "res"]          # kim's OOF: fitted with the local models
    assert sum(team.members["blend_weight"].dropna()) == pytest.approx(1.0, abs=1e-3)
    m = team.members.set_index("member")
    assert m.loc["kim", "how"] == "fitted on OOF" and m.loc["lee", "how"] == "vote" and m.loc["lee", "vote_weight"] == 2
    assert m.loc["kim", "oof_rows"] == len(oofs["res"]) and np.isfinite(m.loc["res", "log_loss"])
    agree = team.agreement
    assert list(agree.index) == ["alt", "res", "kim", "lee", "blend", "team"]
    assert (np.diag(agree) == 1).all() and agree.equals(agree.T)
    assert agree.loc["lee", "team"] == 1.0 and agree.loc["lee", "blend"] == pytest.approx(1 - len(changed) / 40)

    sub = write_team_submission(team, comp, tmp_path / "team.csv", runs)
    written = pd.read_csv(tmp_path / "team.csv")
    sample = pd.read_csv(data / "sample_submission.csv")
    validate_submission(written, sample, label_values=comp.label_values)
    assert list(written["ID"]) == list(sample["ID"]) and sub.shape == written.shape
    by_id = dict(zip(team.ids, values[lee]))
    assert [by_id[i] for i in written["ID"]] == written["target"].tolist()
    assert (runs / "ensemble" / "team_members.csv").exists() and (runs / "ensemble" / "team_agreement.csv").exists()


def test_a_member_without_oof_gets_its_given_weight(team_setup, tmp_path):
    data, runs, mates = team_setup
    comp, found, oofs = open_runs(data, runs)
    tests = load_test(found, comp.classes)
    kim = _as_submission(mates / "kim_f0" / "test.csv", tmp_path / "kim.csv")
    team = team_blend(oofs, tests, comp, [{"path": str(kim), "weight": 0.5}], runs=found)
    assert sorted(team.blend.models) == ["alt", "res"]
    ids, fitted = blend_test(team.blend, tests, comp.classes)
    theirs = pd.read_csv(kim, dtype={"ID": str}).set_index("ID").loc[ids, comp.classes].to_numpy()
    assert np.allclose(team.probs, (2 * fitted + 0.5 * theirs) / 2.5)
    row = team.members.set_index("member").loc["kim"]
    assert row["how"] == "given" and row["blend_weight"] == pytest.approx(0.5 / 2.5, abs=1e-4)


def test_bad_member_files_are_named(team_setup, png_comp, tmp_path):
    data, runs, mates = team_setup
    comp = open_competition(data)
    sub = pd.read_csv(mates / "kim_f0" / "test.csv", dtype={"id": str})
    sub.iloc[:-1].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match=r"short.csv: its IDs .* 1 missing"):
        read_member(tmp_path / "short.csv", comp)
    pd.DataFrame({"ID": sub["id"], "target": 99}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"labels.csv: labels \['99'\] are not classes"):
        read_member(tmp_path / "labels.csv", comp)
    bad = sub.copy()
    bad[comp.classes[0]] += 0.5
    bad.to_csv(tmp_path / "sums.csv", index=False)
    with pytest.raises(ValueError, match="sums.csv: not probabilities"):
        read_member(tmp_path / "sums.csv", comp)
    with pytest.raises(ValueError, match="weight -1 must be a number > 0"):
        read_member({"path": str(tmp_path / "labels.csv"), "weight": -1}, comp)
    with pytest.raises(ValueError, match="unknown keys"):
        read_member({"path": "x.csv", "weigth": 2}, comp)
    # a label file cannot join a probability competition's blend
    labels = pd.DataFrame({"ID": png_comp.test["id"], "label": png_comp.classes[0]})
    labels.to_csv(tmp_path / "png_labels.csv", index=False)
    with pytest.raises(ValueError, match="png_labels.csv holds labels, but .* asks for probabilities"):
        team_blend({}, {}, png_comp, [str(tmp_path / "png_labels.csv")])


def test_teammates_files_alone_after_a_wiped_server(team_setup, tmp_path):
    data, _, mates = team_setup
    comp = open_competition(data)                                   # no run of this machine at all
    kim = _as_submission(mates / "kim_f0" / "test.csv", tmp_path / "kim.csv")
    p = pd.read_csv(kim, dtype={"ID": str}).set_index("ID").loc[comp.test["id"], comp.classes].to_numpy()
    theirs = p.argmax(axis=1)
    theirs[[0, 5]] = (theirs[[0, 5]] + 1) % comp.num_classes
    for who in ("lee", "park"):                                     # two label files agree against kim on 2 rows
        pd.DataFrame({"ID": comp.test["id"], "target": np.asarray(comp.label_values)[theirs]}).to_csv(
            tmp_path / f"{who}.csv", index=False)
    team = team_blend({}, {}, comp, [str(kim), str(tmp_path / "lee.csv"), str(tmp_path / "park.csv")])
    assert team.blend is None and np.allclose(team.probs, p)
    assert np.array_equal(team.labels, theirs) and team.overruled == 2
    assert team.members.set_index("member")["how"].to_dict() == {"kim": "equal", "lee": "vote", "park": "vote"}
    sub = write_team_submission(team, comp, tmp_path / "team.csv", tmp_path / "runs")
    validate_submission(sub, pd.read_csv(data / "sample_submission.csv"), label_values=comp.label_values)
    with pytest.raises(ValueError, match="needs a probability member"):
        team_blend({}, {}, comp, [str(tmp_path / "lee.csv")])


# ---------------------------------------------------------------- calibrated like submission.csv

def _table_world(root, bias=0.0, seed=0, folds_csv=True, n_train=600, n_test=300, k=3):
    """(comp, oofs, tests, runs): a 3-class competition of table rows (the team blend reads ids, targets,
    folds.csv, never an image), with folds.csv unless ``folds_csv`` is False; local models "res" and "vit"
    whose ``k`` fold runs (folders with params.yaml and test.csv) see the true logits through their own
    noise, class 0 held down by ``bias`` nats (a decision offset gains)."""
    rng = np.random.default_rng(seed)

    def draw(n):
        z = rng.normal(0, 1.5, size=(n, 3))
        return z, np.minimum((softmax(z, axis=1).cumsum(axis=1) < rng.random((n, 1))).sum(axis=1), 2)
    (z_tr, y), (z_te, _) = draw(n_train), draw(n_test)
    ids, test_ids = [f"tr{i:04d}" for i in range(n_train)], [f"te{i:04d}" for i in range(n_test)]
    train = pd.DataFrame({"id": ids, "target": y, "label": np.asarray(PNG_CLASSES)[y]})
    sample = pd.DataFrame({"ID": test_ids, **{c: 1 / 3 for c in PNG_CLASSES}})
    root.mkdir(parents=True, exist_ok=True)
    comp = Competition(root, list(PNG_CLASSES), train, pd.DataFrame({"id": test_ids}), sample_submission=sample)
    fold = rng.permutation(np.arange(n_train) % k)
    if folds_csv:
        pd.DataFrame({"id": ids, "fold": fold}).to_csv(root / "folds.csv", index=False)
    shift, oofs, tests, rows = np.array([-bias, 0.0, 0.0]), {}, {}, []
    noisy = lambda z: softmax(z + shift + rng.normal(0, 1.5, size=z.shape), axis=1)  # noqa: E731
    for model in ("res", "vit"):
        oofs[model] = oof_table(y, noisy(z_tr), ids, fold)
        parts = [noisy(z_te) for _ in range(k)]
        for f, p in enumerate(parts):
            d = root / "runs" / f"{model}_f{f}"
            d.mkdir(parents=True)
            (d / "params.yaml").write_text(f"backbone: test_resnet\nfold: {f}\nn_folds: {k}\nrun_name: {d.name}\n")
            pd.DataFrame(p, columns=PNG_CLASSES).assign(id=test_ids)[["id", *PNG_CLASSES]].to_csv(d / "test.csv",
                                                                                                  index=False)
            rows.append({"run_name": d.name, "model": model, "fold": f, "dir": str(d)})
        tests[model] = pd.DataFrame(np.mean(parts, axis=0), columns=PNG_CLASSES).assign(id=test_ids)
    return comp, oofs, tests, pd.DataFrame(rows)


def _submitted(oofs, tests, runs, comp, metric="log_loss"):
    """(calibrated blend, ids, probs): what 04 writes to submission.csv (fit_blend, calibrate_test, blend_test)."""
    b, _ = calibrate_test(fit_blend(oofs, comp.classes, metric), tests, runs, comp.classes)
    return (b, *blend_test(b, tests, comp.classes))


def test_the_team_blend_gets_the_test_temperature_of_the_submission(tmp_path):
    comp, oofs, tests, runs = _table_world(tmp_path / "c")
    b, ids, probs = _submitted(oofs, tests, runs, comp)
    team = team_blend(oofs, tests, comp, [], runs=runs)       # the local models alone: submission.csv's blend
    assert team.blend.test_temperature == pytest.approx(b.test_temperature) != b.temperature
    assert np.array_equal(team.ids, ids) and np.allclose(team.probs, probs, atol=1e-9)


def test_the_team_blend_keeps_the_decision_offsets(tmp_path):
    comp, oofs, tests, runs = _table_world(tmp_path / "c", bias=2.0)
    b, ids, probs = _submitted(oofs, tests, runs, comp, "f1_macro")
    assert b.offsets is not None                               # the world is made for a decision layer to gain
    team = team_blend(oofs, tests, comp, [], "f1_macro", runs=runs)
    assert np.allclose(team.blend.offsets, b.offsets)
    assert np.array_equal(team.labels, probs.argmax(axis=1)) and np.allclose(team.probs, probs, atol=1e-9)


def test_cross_fit_folds_come_from_folds_csv_not_from_the_first_member(tmp_path):
    comp, oofs, tests, runs = _table_world(tmp_path / "c")
    truth = pd.read_csv(comp.work / "folds.csv", dtype={"id": str}).set_index("id")["fold"]
    kim = oofs["res"].assign(**{c: oofs["vit"][c] for c in PNG_CLASSES})    # a teammate's OOF, sorting first
    pd.DataFrame({"ID": tests["vit"]["id"], **{c: tests["vit"][c] for c in PNG_CLASSES}}).to_csv(
        tmp_path / "kim.csv", index=False)
    for name, theirs in (("no fold column", kim.drop(columns="fold")),
                         ("folds of their own", kim.assign(fold=np.arange(len(kim)) % 2))):
        theirs.to_csv(tmp_path / "kim_oof.csv", index=False)
        team = team_blend(oofs, tests, comp, [{"path": tmp_path / "kim.csv", "oof": tmp_path / "kim_oof.csv",
                                               "name": "kim"}], runs=runs)
        assert team.blend.models[0] == "kim" and team.blend.cross_probs is not None, name
        assert np.array_equal(team.blend.folds, truth.loc[team.blend.ids].to_numpy()), name
    # no folds.csv at all: said, and fitted in-sample
    bare, oofs, tests, runs = _table_world(tmp_path / "bare", folds_csv=False)
    with pytest.warns(UserWarning, match="folds.csv does not exist"):
        team = team_blend(oofs, tests, bare, [], runs=runs)
    assert team.blend.cross_probs is None


def test_a_teammates_finished_submission_is_not_re_tempered(tmp_path):
    comp, oofs, tests, runs = _table_world(tmp_path / "c")
    theirs = softmax(np.random.default_rng(5).normal(0, 2, size=(len(comp.test), 3)), axis=1)
    pd.DataFrame({"ID": comp.test["id"], **dict(zip(PNG_CLASSES, theirs.T))}).to_csv(tmp_path / "kim.csv", index=False)
    team = team_blend(oofs, tests, comp, [str(tmp_path / "kim.csv")], runs=runs)   # no OOF: a calibrated file
    b, ids, probs = _submitted(oofs, tests, runs, comp)
    assert team.blend.test_temperature == pytest.approx(b.test_temperature)     # the fitted part: calibrated
    assert np.allclose(team.probs, (2 * probs + theirs) / 3, atol=1e-9)           # theirs: exactly as sent
