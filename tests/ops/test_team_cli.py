"""lib.ops.team as a user runs it, a real subprocess: two teammates' run folders (real tiny runs on a
document-style label competition) blended from the command line into the same submission the library
makes, its CV recorded by the file's sha1 and found again when its leaderboard score is logged; the log
printed and drawn; bad calls refused with exit status 2 and the reason."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from shared import as_document_competition

from lib.core.config import TrainConfig
from lib.core.io import file_sha1
from lib.core.paths import repo_root
from lib.data.competition import open_competition
from lib.ops.team import main
from lib.predict.calibrate import expected_score
from lib.predict.submission import validate_submission
from lib.predict.team import team_blend
from lib.train.loop import train_fold

TINY = dict(backbone="test_resnet", img_size=16, batch_size=32, epochs=1, n_folds=2, fold=0, progress=False,
            verbose=False, num_workers=0, precision="fp32")


@pytest.fixture(scope="module")
def mates(_digits_source, tmp_path_factory):
    """(competition folder, the teammates' runs folder): kim_f0 and lee_f0, each with test.csv and oof.csv."""
    tmp = tmp_path_factory.mktemp("team_cli")
    data = as_document_competition(_digits_source, tmp / "docs", n_test=30)
    for name, seed in (("kim", 1), ("lee", 2)):
        train_fold(TrainConfig(data_dir=str(data), seed=seed, run_name=f"{name}_f0", runs_dir=str(tmp / "shared"),
                               **TINY))
    return data, tmp / "shared"


def cli(*args):
    """``python -m lib.ops.team ARGS`` in a fresh process, from the repo root."""
    env = {**os.environ, "PYTHONPATH": str(repo_root()), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "lib.ops.team", *map(str, args)], cwd=repo_root(), env=env,
                          capture_output=True, text=True, timeout=300)


def call(capsys, *args):
    """``main(ARGS)`` in this process (quicker than ``cli``): (exit status, stdout, stderr)."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_blend_then_log_the_leaderboard_score_from_the_command_line(mates, tmp_path, capsys):
    data, shared = mates
    runs, out = tmp_path / "runs", tmp_path / "team.csv"
    r = cli("blend", shared / "kim_f0", shared / "lee_f0", "--data-dir", data, "--out", out, "--runs-dir", runs,
            "--metric", "f1_macro")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    comp = open_competition(data)
    written = pd.read_csv(out)
    validate_submission(written, comp.sample_submission, label_values=comp.label_values)
    # the same blend as the library's, in the same process order of things
    team = team_blend({}, {}, comp, [str(shared / "kim_f0"), str(shared / "lee_f0")], metric="f1_macro")
    by_id = dict(zip(team.ids, np.asarray(comp.label_values)[team.labels]))
    assert written["target"].tolist() == [by_id[i] for i in written["ID"].astype(str)]
    members = pd.read_csv(runs / "ensemble" / "team_members.csv")
    assert members["member"].tolist() == ["kim_f0", "lee_f0"] and (members["how"] == "fitted on OOF").all()
    rec = json.loads((runs / "ensemble" / "team_expected_score.json").read_text())
    assert rec["submission_sha1"] == file_sha1(out) and rec["metric"] == "f1_macro"
    assert rec["expected"] == pytest.approx(expected_score(team.blend, n_test=len(comp.test))["expected"])
    assert f"CV: f1_macro {rec['expected']:.4f}" in r.stdout

    lb = round(rec["expected"] * 0.8, 4)  # the leaderboard worse than CV (macro F1: higher is better)
    r = cli("lb", "add", out, lb, "--note", "kim + lee", "--runs-dir", runs)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = pd.read_csv(runs / "lb_log.csv")
    assert len(log) == 1 and log.loc[0, "sha1"] == file_sha1(out) and log.loc[0, "metric"] == "f1_macro"
    assert log.loc[0, "cv"] == pytest.approx(rec["expected"]) and log.loc[0, "lb"] == lb
    assert log.loc[0, "gap"] == pytest.approx(lb - rec["expected"])
    assert log.loc[0, "cv_from"].endswith("team_expected_score.json") and log.loc[0, "note"] == "kim + lee"
    assert (runs / "lb_log.png").stat().st_size > 0 and "kim + lee" in r.stdout

    # the same file again: refused, nothing changed; the exit status says so
    code, _, err = call(capsys, "lb", "add", out, lb, "--runs-dir", runs)
    assert code == 2 and "logged already" in err and "--replace" in err
    assert len(pd.read_csv(runs / "lb_log.csv")) == 1
    code, shown, _ = call(capsys, "lb", "show", "--runs-dir", runs)
    assert code == 0 and f"{lb}" in shown and "kim + lee" in shown


def test_blend_with_a_member_without_oof_records_no_cv(mates, tmp_path, capsys):
    data, shared = mates
    runs, out = tmp_path / "runs", tmp_path / "team.csv"
    kim = pd.read_csv(shared / "kim_f0" / "test.csv").rename(columns={"id": "ID"})
    kim.to_csv(tmp_path / "kim_probs.csv", index=False)  # a probability file, as a teammate sends it
    code, out_, err = call(capsys, "blend", tmp_path / "kim_probs.csv", shared / "lee_f0", "--data-dir", data,
                           "--out", out, "--runs-dir", runs, "--weights", 2, "-", "--metric", "f1_macro")
    assert code == 0, out_[-3000:] + err[-3000:]
    assert out.exists() and not (runs / "ensemble" / "team_expected_score.json").exists()
    assert "CV: unknown" in out_
    members = pd.read_csv(runs / "ensemble" / "team_members.csv").set_index("member")
    assert members.loc["kim_probs", "how"] == "given" and members.loc["lee_f0", "how"] == "fitted on OOF"
    code, _, err = call(capsys, "lb", "add", out, 0.5, "--runs-dir", runs)
    assert code == 2 and "team.csv: no CV recorded" in err and "--cv" in err
    assert not (runs / "lb_log.csv").exists()


def test_bad_calls_are_refused_with_the_reason(mates, tmp_path, capsys):
    data, shared = mates
    code, _, err = call(capsys, "blend", shared / "kim_f0", shared / "lee_f0", "--data-dir", data, "--out",
                        tmp_path / "t.csv", "--runs-dir", tmp_path, "--weights", 1)
    assert code == 2 and "--weights: give one value per file (2" in err
    assert not (tmp_path / "t.csv").exists()
    code, _, err = call(capsys, "blend", tmp_path / "nothing.csv", "--data-dir", data, "--out", tmp_path / "t.csv",
                        "--runs-dir", tmp_path)
    assert code == 2 and "nothing.csv: no such prediction file" in err
    code, _, err = call(capsys, "lb", "add", tmp_path / "nothing.csv", 0.1, "--runs-dir", tmp_path)
    assert code == 2 and "nothing.csv: no such submission file" in err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "python -m lib.ops.team" in capsys.readouterr().out
