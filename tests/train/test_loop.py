"""lib.train.loop: a real (tiny) run, its artifacts, the epoch whose weights it keeps, the EMA's decay, exact
resume, skip when complete, guarded params."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from fastai.callback.core import Callback
from shared import Interrupt, SpoilEpoch

from lib.core.config import TrainConfig
from lib.core.runlock import RunLocked
from lib.train.loop import cudnn_autotuned, fit, setup_run, train_fold, write_predictions

TINY = dict(backbone="test_resnet", n_folds=3, fold=0, img_size=24, batch_size=32, epochs=3, lr=3e-3,
            progress=False, verbose=False, num_workers=0)
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)


def test_run_writes_every_artifact(digits_comp, tmp_path):
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), ema_epochs=2.0, mixup=0.4,
                                cutmix=1.0, loss="focal", loss_args={"gamma": 2.0}, **TINY))
    fit(run)
    write_predictions(run)
    d = tmp_path / "test_resnet_f0"
    for f in ("params.yaml", "metrics.json", "oof.csv", "test.csv", "model.safetensors", "state.pt",
              "curves.png", "env.json"):
        assert (d / f).exists(), f
    m = json.loads((d / "metrics.json").read_text())
    assert m["complete"] and len(m["epochs"]) == 3 and 0 <= m["best_epoch"] < 3
    assert (m["weights_from"], m["weights_epoch"], m["last_epoch"], m["monitor"]) == ("last", 2, 2, "log_loss")
    for k, e in (("valid_best", m["best_epoch"]), ("valid_last", 2)):
        assert m[k] == {s: m["epochs"][e][s] for s in ("log_loss", "accuracy", "f1_macro", "valid_loss")}
    # EMA over 2 epochs of n steps: decay 1 - 1/(2n), reached after 2n updates (a running mean before)
    n = len(run.learn.dls.train)
    assert m["ema"] == pytest.approx({"decay": 1 - 1 / (2 * n), "horizon_epochs": 2.0, "steps_per_epoch": n})
    for h in m["epochs"]:
        t = (h["epoch"] + 1) * n                                     # updates by the end of the epoch
        assert h["ema_decay"] == pytest.approx(min(1 - 1 / (2 * n), 1 - 1 / t))
        assert h["ema_horizon_epochs"] == pytest.approx(min(2.0, t / n))
    oof = pd.read_csv(d / "oof.csv", dtype={"id": str})
    classes = list(pd.read_csv(digits_comp / "sample_submission.csv").columns[1:])
    assert list(oof.columns) == ["id", "fold", "target"] + classes
    assert np.allclose(oof[classes].sum(axis=1), 1, atol=1e-5) and (oof["fold"] == 0).all()
    folds = pd.read_csv(digits_comp / "folds.csv", dtype={"id": str})
    assert set(oof["id"]) == set(folds.loc[folds["fold"] == 0, "id"])
    test = pd.read_csv(d / "test.csv", dtype={"id": str})
    sample = pd.read_csv(digits_comp / "sample_submission.csv", dtype={"ID": str})
    assert list(test["id"]) == list(sample["ID"]) and list(test.columns[1:]) == classes
    # the score in metrics.json is the one of the saved best weights on the OOF file
    from lib.core.metrics import log_loss
    assert m["log_loss"] == pytest.approx(log_loss(oof["target"].to_numpy(), oof[classes].to_numpy()), rel=1e-9)
    env = json.loads((d / "env.json").read_text())
    assert env["seed"] == 42 and env["torch"] == torch.__version__ and env["cpu"]
    # the precision chosen for this machine and why, beside the CPU it was chosen for
    assert env["precision"] == "fp32" and env["precision_reason"] == "asked"
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("workers", [0, 2])
def test_predictions_use_the_recipes_loader_workers(digits_comp, tmp_path, monkeypatch, workers):
    """OOF and test predictions start as many loader processes as the recipe asks: before, they took fastai's
    DataLoader.num_workers, which is always 1 (one process on a GPU box set to 8; in a data-parallel rank,
    two spawned processes that each imported the whole stack: ~16 s of a tiny 2-process run)."""
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), **{**TINY, "epochs": 1,
                                                                                      "num_workers": workers}))
    fit(run)
    started = []
    start = multiprocessing.process.BaseProcess.start
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", lambda p: started.append(p) or start(p))
    write_predictions(run)
    assert len(started) == 2 * workers     # the validation fold's loader, then the test set's


@pytest.mark.parametrize("keep", ["last", "monitor"])
def test_resume_matches_uninterrupted_run(digits_comp, tmp_path, keep):
    recipe = dict(data_dir=str(digits_comp), ema=0.9, mixup=0.4, best_epoch=keep, **TINY)
    ref = train_fold(TrainConfig(runs_dir=str(tmp_path / "a"), **recipe))
    run = setup_run(TrainConfig(runs_dir=str(tmp_path / "b"), **recipe))
    run.learn.add_cb(Interrupt(at=2))
    with pytest.raises(KeyboardInterrupt):
        fit(run)
    saved = json.loads((tmp_path / "b" / "test_resnet_f0" / "metrics.json").read_text())
    assert not saved["complete"] and len(saved["epochs"]) == 2
    run = setup_run(TrainConfig(runs_dir=str(tmp_path / "b"), **recipe))
    assert run.start_epoch == 2
    fit(run)
    got = write_predictions(run)
    assert len(got["epochs"]) == 3
    for a, b in zip(ref["epochs"], got["epochs"]):
        for k in ("train_loss", "valid_loss", "log_loss", "accuracy", "ema_decay"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), (a["epoch"], k)
    assert got["weights_epoch"] == ref["weights_epoch"] == (2 if keep == "last" else ref["best_epoch"])
    assert got["log_loss"] == pytest.approx(ref["log_loss"], rel=1e-6)




def test_best_epoch_keeps_the_last_or_the_monitored_epoch(digits_comp, tmp_path):
    """The saved weights are the epoch's that best_epoch names: their OOF log loss is that epoch's
    validation log loss in the history, and oof.csv / metrics.json say so."""
    from lib.core.metrics import log_loss
    got = {}
    for keep in ("monitor", "last"):
        run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path / keep), best_epoch=keep,
                                    hflip=False, **TINY))
        assert not any(type(op).__name__ == "HorizontalFlip" for op in run.data.train.tfm.transforms)
        run.learn.add_cb(SpoilEpoch())
        fit(run)
        got[keep] = write_predictions(run)
    hist = got["last"]["epochs"]
    assert [h["log_loss"] for h in got["monitor"]["epochs"]] == pytest.approx([h["log_loss"] for h in hist], rel=1e-6)
    best = min(hist, key=lambda h: h["log_loss"])["epoch"]
    assert best < 2 and hist[2]["log_loss"] > hist[best]["log_loss"] + 0.1   # the spoiled last epoch is worse
    classes = list(pd.read_csv(digits_comp / "sample_submission.csv").columns[1:])
    for keep, epoch in (("monitor", best), ("last", 2)):
        m = got[keep]
        assert (m["weights_from"], m["weights_epoch"], m["best_epoch"], m["last_epoch"]) == (keep, epoch, best, 2)
        assert m["log_loss"] == pytest.approx(hist[epoch]["log_loss"], rel=1e-4)     # epochs differ by > 0.5%
        assert m["valid_best"]["log_loss"] == hist[best]["log_loss"]
        assert m["valid_last"]["log_loss"] == hist[2]["log_loss"]
        oof = pd.read_csv(tmp_path / keep / "test_resnet_f0" / "oof.csv", dtype={"id": str})
        assert log_loss(oof["target"].to_numpy(), oof[classes].to_numpy()) == pytest.approx(m["log_loss"], rel=1e-9)


def test_complete_run_is_skipped_and_params_are_guarded(digits_comp, tmp_path):
    train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), **{**TINY, "epochs": 1}))
    mtime = (tmp_path / "test_resnet_f0" / "oof.csv").stat().st_mtime_ns
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), **{**TINY, "epochs": 1}))
    assert run.complete and run.learn is None
    fit(run), write_predictions(run)
    assert (tmp_path / "test_resnet_f0" / "oof.csv").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="another recipe: lr 0.003 there, 0.1 now"):
        setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), **{**TINY, "epochs": 1, "lr": 0.1}))
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), force=True,
                    **{k: v for k, v in {**TINY, "epochs": 1, "lr": 0.1}.items()}))
    assert not run.complete


TRAIN_WHEN_TOLD = """
import sys
from lib.core.config import TrainConfig
from lib.train.loop import fit, setup_run, write_predictions
run = setup_run(TrainConfig.from_yaml(sys.argv[1]))
print("set up", flush=True)
sys.stdin.readline()                     # trains once the test says so
fit(run)
write_predictions(run)
"""


def test_a_second_process_cannot_set_up_a_run_another_one_holds(digits_comp, tmp_path, monkeypatch):
    """Two jobs given one run (two notebooks, a grid beside a notebook): the second is refused, naming
    the folder and the holder, and with force it deletes nothing; the first trains on undisturbed."""
    monkeypatch.setattr("lib.core.runlock.LOCAL_WAIT_S", 0.5)
    recipe = tmp_path / "r.yaml"
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path / "runs"), run_name="r", **{**TINY, "epochs": 2})
    cfg.to_yaml(recipe)
    first = subprocess.Popen([sys.executable, "-c", TRAIN_WHEN_TOLD, str(recipe)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert first.stdout.readline().strip() == "set up"
        params = tmp_path / "runs" / "r" / "params.yaml"
        stamp = params.stat().st_mtime_ns
        for other in (cfg, cfg.replace(force=True, lr=0.1)):
            with pytest.raises(RunLocked, match=rf"{tmp_path / 'runs' / 'r'} is in use: process {first.pid} on "):
                setup_run(other)
        assert params.stat().st_mtime_ns == stamp and TrainConfig.from_yaml(params).lr == cfg.lr   # not touched
        first.stdin.write("train\n")
        first.stdin.close()
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert metrics["complete"] and len(metrics["epochs"]) == 2
    run = setup_run(cfg)                                         # the first one ended: free again
    assert run.complete and run.lock.held
    write_predictions(run)
    assert not run.lock.held                                     # released once the run is written


def test_exclude_ids_and_bad_arguments(digits_comp, tmp_path):
    folds = pd.read_csv(digits_comp / "folds.csv", dtype={"id": str}) if (digits_comp / "folds.csv").exists() else None
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), **TINY))
    n = len(run.data.train)
    drop = pd.DataFrame({"id": run.folds.loc[run.folds["fold"] != 0, "id"].head(7)})
    drop.to_csv(tmp_path / "noisy.csv", index=False)
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path),
                                exclude_ids=str(tmp_path / "noisy.csv"), run_name="excl", **TINY))
    assert len(run.data.train) == n - 7
    with pytest.raises(ValueError, match="fold 7 not in"):
        setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path),
                              **{**TINY, "fold": 7, "run_name": "x"}))
    with pytest.raises(ValueError, match="img_size 8 does not fit test_convnext"):
        setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), **{**TINY, "backbone": "test_convnext",
                                                                        "img_size": 8, "run_name": "z"}))
    with pytest.raises(FileNotFoundError, match="no such competition"):
        setup_run(TrainConfig(data_dir=str(tmp_path / "nope"), runs_dir=str(tmp_path), **{**TINY, "run_name": "y"}))
    assert folds is None or len(folds)


def test_group_col_keeps_groups_in_one_fold(digits_comp, tmp_path):
    """A labels table with a group column (e.g. 01_eda's duplicate groups) splits folds by group."""
    from lib.data.competition import scan_competition
    comp = scan_competition(digits_comp, verbose=False)
    table = pd.DataFrame({"id": comp.train["id"], "img_path": comp.train["path"], "label": comp.train["label"],
                          "grp": np.arange(len(comp.train)) // 5})
    table.to_csv(digits_comp / "labels.csv", index=False)
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), group_col="grp",
                    scan_args={"labels_csv": "labels.csv"}, **{**TINY, "run_name": "g"}))
    folds = run.folds.merge(table[["id", "grp"]].rename(columns={"grp": "g2"}), on="id")
    assert folds.groupby("g2")["fold"].nunique().max() == 1


def test_diverging_run_says_what_to_do(digits_comp, tmp_path):
    with pytest.raises(FloatingPointError, match="lower lr"):
        train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), **{**TINY, "lr": 1e6, "epochs": 2}))


def test_ema_skips_accumulated_micro_batches(digits_comp, tmp_path):
    from lib.train.callbacks import EMA
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), ema=0.5, grad_accum=2,
                    **{**TINY, "epochs": 1, "batch_size": 16}))
    ema = next(cb for cb in run.learn.cbs if isinstance(cb, EMA))
    calls = []
    ema.before_fit()
    real = ema.model_ema.update
    ema.model_ema.update = lambda model, step=None: calls.append(step) or real(model, step=step)
    fit(run)
    assert 0 < len(calls) <= len(run.data.train) // 16 // 2 + 1           # one update per optimizer step
    assert calls == list(range(1, len(calls) + 1))                         # numbered by optimizer step


class PoisonWeights(Callback):
    """NaN in every weight once the epoch has trained: the validation outputs are NaN."""
    def after_train(self):
        with torch.no_grad():
            for p in self.learn.model.parameters():
                p.fill_(float("nan"))


def test_bf16_on_cpu_trains_and_predicts(digits_comp, tmp_path, capsys):
    """precision="bf16" autocasts forward and loss on the CPU; OOF probabilities stay float64-clean."""
    from lib.train.callbacks import CpuAutocast

    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), device="cpu",
                    **{**TINY, "epochs": 1, "precision": "bf16"}))
    assert any(isinstance(cb, CpuAutocast) for cb in run.learn.cbs)
    # the run's notebook says what it computes in, why, and on which CPU
    setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), device="cpu", run_name="talk",
                          **{**TINY, "epochs": 1, "precision": "bf16", "verbose": True}))
    said = capsys.readouterr().out
    assert "precision: bf16 (asked" in said and f"capability {torch.backends.cpu.get_cpu_capability()})" in said
    seen = []

    class Watch(Callback):
        order = 20  # after CpuAutocast, as the loss sees the predictions

        def after_pred(self):
            seen.append((torch.is_autocast_enabled("cpu"), self.pred.dtype))

    run.learn.add_cb(Watch())
    fit(run)
    m = write_predictions(run)
    assert seen and all(on for on, _ in seen) and all(dt == torch.float32 for _, dt in seen)
    assert not torch.is_autocast_enabled("cpu")  # left on no batch
    oof = pd.read_csv(tmp_path / "test_resnet_f0" / "oof.csv")
    assert np.allclose(oof.iloc[:, 3:].sum(axis=1), 1, atol=1e-4) and np.isfinite(m["log_loss"])
    # a diverged bf16 run on the CPU says which precision it ran in and what to try
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), device="cpu", run_name="nan",
                                **{**TINY, "epochs": 1, "precision": "bf16"}))
    run.learn.add_cb(PoisonWeights())
    with pytest.raises(FloatingPointError, match="NaN/inf.*trains in bf16 on the CPU.*try precision fp32"):
        fit(run)
    with pytest.raises(ValueError, match="precision 'fp8'"):
        setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), run_name="x",
                              **{**TINY, "precision": "fp8"}))


def test_cudnn_autotuner_is_on_only_while_a_cuda_run_computes(monkeypatch):
    """No global flip: the flag is on inside a CUDA run's training and prediction, as it was before after."""
    class FakeRun:  # what cudnn_autotuned reads of a Run: where its model's weights are
        def __init__(self, device):
            param = type("P", (), {"device": torch.device(device)})()
            self.learn = type("L", (), {"model": type("M", (), {"parameters": lambda _: iter([param])})()})()
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with cudnn_autotuned(FakeRun("cpu")):
        assert torch.backends.cudnn.benchmark is False
    with pytest.raises(KeyboardInterrupt), cudnn_autotuned(FakeRun("cuda")):
        assert torch.backends.cudnn.benchmark is True
        raise KeyboardInterrupt
    assert torch.backends.cudnn.benchmark is False
