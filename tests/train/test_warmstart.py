"""lib.train.warmstart: a run starts from another run's weights only when that run trained on the same split:
same fold, same folds.csv (its recorded folds hash, or for older runs its oof.csv ids)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import safetensors.torch
import torch

from lib.core.config import TrainConfig
from lib.data.folds import folds_hash
from lib.train.loop import fit, setup_run, train_fold

TINY = dict(backbone="test_resnet", n_folds=3, img_size=16, batch_size=32, epochs=1, lr=3e-3, progress=False,
            verbose=False, num_workers=0)
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)


@pytest.fixture()
def first(digits_comp, tmp_path):
    """A finished fold-0 run to start from: its folder."""
    train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), fold=0, run_name="first_f0", **TINY))
    return tmp_path / "first_f0"


def _next(digits_comp, tmp_path, fold=0, init_from=None, **kw):
    return TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), fold=fold, run_name=f"next_f{fold}",
                       init_from=init_from or str(tmp_path / "first_f{fold}"), **{**TINY, **kw})


def _same_weights(model, path) -> bool:
    saved = safetensors.torch.load_file(str(path))
    return all(torch.equal(v.cpu(), saved[k]) for k, v in model.state_dict().items())


def test_runs_record_their_folds_hash(first, digits_comp):
    m = json.loads((first / "metrics.json").read_text())
    folds = pd.read_csv(digits_comp / "folds.csv", dtype={"id": str})
    assert m["folds_sha1"] == folds_hash(folds) == folds_hash(folds.sample(frac=1, random_state=0))
    changed = folds.copy()
    changed.loc[0, "fold"] = (changed.loc[0, "fold"] + 1) % 3
    assert folds_hash(changed) != m["folds_sha1"]


def test_init_from_loads_the_same_folds_run(first, digits_comp, tmp_path):
    run = setup_run(_next(digits_comp, tmp_path, epochs=2))     # "{fold}" in init_from: this run's fold
    assert _same_weights(run.learn.model, first / "model.safetensors")
    fresh = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), fold=0, run_name="fresh",
                                  **{**TINY, "epochs": 2}))
    assert not _same_weights(fresh.learn.model, first / "model.safetensors")
    # a resume continues from its own state, whatever init_from's folder holds by then
    fit(run)
    (first / "model.safetensors").unlink()
    again = setup_run(_next(digits_comp, tmp_path, epochs=2))
    assert again.start_epoch == 2


def test_init_from_refuses_another_fold_and_another_folds_csv(first, digits_comp, tmp_path):
    with pytest.raises(ValueError, match="is fold 0 of 3 folds, this run fold 1 of 3"):
        setup_run(_next(digits_comp, tmp_path, fold=1, init_from=str(first)))
    with pytest.raises(FileNotFoundError, match="not a trained run folder"):
        setup_run(_next(digits_comp, tmp_path, fold=1))               # first_f1 does not exist
    assert not (tmp_path / "next_f1").exists()                         # refused before anything is written
    folds = pd.read_csv(digits_comp / "folds.csv", dtype={"id": str})
    a = folds.index[folds["fold"] == 0][0]
    b = folds.index[folds["fold"] == 1][0]
    folds.loc[[a, b], "fold"] = [1, 0]                                 # two images trade folds
    folds.to_csv(digits_comp / "folds.csv", index=False)
    with pytest.raises(ValueError, match="another fold assignment"):
        setup_run(_next(digits_comp, tmp_path))
    # a run from before the folds hash: its oof.csv shows which images it validated on
    m = json.loads((first / "metrics.json").read_text())
    del m["folds_sha1"]
    (first / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="validated on other images than fold 0"):
        setup_run(_next(digits_comp, tmp_path))
    folds.loc[[a, b], "fold"] = [0, 1]
    folds.to_csv(digits_comp / "folds.csv", index=False)
    run = setup_run(_next(digits_comp, tmp_path))
    assert _same_weights(run.learn.model, first / "model.safetensors")
