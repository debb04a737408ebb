"""lib.train.checkpoint: a run resumes, or is reused complete, only on the folds.csv and tables it started
on (its data.json); a run made before data.json is resumed with a warning."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from shared import Interrupt

from lib.core.config import TrainConfig
from lib.data.folds import folds_hash
from lib.train.loop import fit, setup_run, train_fold

TINY = dict(backbone="test_resnet", n_folds=3, fold=0, img_size=24, batch_size=32, epochs=3, lr=3e-3,
            progress=False, verbose=False, num_workers=0, precision="fp32")


def _interrupted(cfg: TrainConfig, at: int):
    """setup_run + fit, killed (Ctrl+C) at the start of epoch ``at``: state.pt holds ``at`` epochs."""
    run = setup_run(cfg)
    run.learn.add_cb(Interrupt(at=at))
    with pytest.raises(KeyboardInterrupt):
        fit(run)
    return run


def _data_json(run) -> dict:
    return json.loads((run.dir / "data.json").read_text())


def test_resume_refuses_a_remade_folds_csv(digits_comp, tmp_path):
    """01_eda finds duplicates, folds.csv is deleted and remade (as folds.py says) between an interrupted run and
    its resume: the run would go on validating on images it trained on, so it is refused, naming folds.csv and
    force=True; with unchanged folds it resumes, and force=True starts it again on the new folds."""
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), **TINY)
    first = _interrupted(cfg, at=1)
    assert _data_json(first)["folds_sha1"] == folds_hash(first.folds)
    again = _interrupted(cfg, at=2)
    assert again.start_epoch == 1                                         # unchanged: resumed
    state = first.dir / "state.pt"
    stamp = state.stat().st_mtime_ns
    (digits_comp / "eda").mkdir()
    ids = first.folds["id"].sort_values().to_numpy()
    pd.DataFrame({"id": ids, "group": range(len(ids)), "checked": True}).assign(
        group=lambda d: d["group"] // 4).to_csv(digits_comp / "eda" / "groups.csv", index=False)
    (digits_comp / "folds.csv").unlink(), (digits_comp / "folds.json").unlink()
    with pytest.raises(ValueError, match=r"(?s)test_resnet_f0 was trained on other data.*folds\.csv "
                                         r".*digits/folds\.csv was remade.*images it trained on.*force=True"):
        setup_run(cfg)
    remade = pd.read_csv(digits_comp / "folds.csv", dtype={"id": str})
    assert folds_hash(remade) != _data_json(first)["folds_sha1"]          # a real re-split was refused
    assert state.stat().st_mtime_ns == stamp                              # nothing trained on the new split
    fresh = setup_run(cfg.replace(force=True))
    assert fresh.start_epoch == 0 and _data_json(fresh)["folds_sha1"] == folds_hash(remade)


def test_reuse_refuses_a_changed_exclude_ids_table(digits_comp, tmp_path):
    """A complete run trained without some noisy ids is not reused once the table lists others (or is gone):
    its results would be recorded as those of the table now there."""
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), **{**TINY, "epochs": 1})
    folds = setup_run(cfg).folds
    noisy = tmp_path / "noisy.csv"
    drop = folds.loc[folds["fold"] != 0, "id"]
    drop.head(5).to_frame().to_csv(noisy, index=False)
    cfg = cfg.replace(exclude_ids=str(noisy), run_name="excl")
    train_fold(cfg)
    recorded = json.loads((tmp_path / "excl" / "data.json").read_text())["tables"]
    assert list(recorded) == ["exclude_ids"] and recorded["exclude_ids"]["path"] == str(noisy)
    run = setup_run(cfg)
    assert run.complete and run.learn is None                              # unchanged: reused as it is
    drop.head(6).to_frame().to_csv(noisy, index=False)
    with pytest.raises(ValueError, match=rf"(?s)excl was trained on other data.*exclude_ids table {noisy} changed "
                                         r"\(sha256 \w{12} at setup, \w{12} now\).*force=True"):
        setup_run(cfg)
    noisy.unlink()
    with pytest.raises(ValueError, match=rf"exclude_ids table {noisy} is gone"):
        setup_run(cfg)


def test_a_run_made_before_data_json_resumes_with_a_warning(digits_comp, tmp_path):
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), **TINY)
    run = _interrupted(cfg, at=1)
    (run.dir / "data.json").unlink()                                      # an older kit's run
    with pytest.warns(UserWarning, match="records no data.json .* cannot be checked"):
        again = setup_run(cfg)
    assert again.start_epoch == 1 and not (run.dir / "data.json").exists()
