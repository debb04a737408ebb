"""lib.predict.team: two local runs blended with a teammate's probability submission (with its OOF) and another's
label submission on a document-style label competition; the vote and its tie-break on known rows, given
weights, the agreement table, the written submission, and bad files refused by name."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import as_document_competition

from lib.core.config import TrainConfig
from lib.data.competition import open_competition
from lib.predict.blend import blend_tests
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
    alone = team_blend(oofs, tests, comp, [{"path": kim, "oof": mates / "kim_f0" / "oof.csv", "name": "kim"}])
    lee = alone.labels.copy()
    changed = [3, 7, 11]
    lee[changed] = (lee[changed] + 1) % comp.num_classes
    values = np.asarray(comp.label_values)
    pd.DataFrame({"ID": alone.ids, "target": values[lee]}).to_csv(tmp_path / "lee.csv", index=False)

    external = [{"path": str(kim), "oof": str(mates / "kim_f0" / "oof.csv"), "name": "kim"},
                {"path": str(tmp_path / "lee.csv"), "name": "lee"}]
    tie = team_blend(oofs, tests, comp, external)                      # lee's 1 vote against the blend's 1: a tie
    assert np.array_equal(tie.labels, alone.labels) and tie.overruled == 0
    external[1]["weight"] = 2
    team = team_blend(oofs, tests, comp, external)                     # 2 against 1: lee wins where they differ
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
    team = team_blend(oofs, tests, comp, [{"path": str(kim), "weight": 0.5}])
    assert sorted(team.blend.models) == ["alt", "res"]
    ids, fitted = blend_tests(tests, team.blend.models, team.blend.weights, team.blend.space,
                              team.blend.temperature, comp.classes)
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
