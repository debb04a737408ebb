"""lib.train.tracking: a 2-run grid logged to a real MLflow server the test starts (sqlite store, local artifact
folder, a loopback port), a run logged by W&B in offline mode and resumed after an interruption, and
neither package imported unless chosen."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fastai.callback.core import Callback

from lib.core.config import TrainConfig
from lib.ops.runner import run_grid
from lib.train.distributed import free_port
from lib.train.loop import fit, setup_run, train_fold

TINY = dict(backbone="test_resnet", img_size=24, batch_size=32, epochs=2, lr=3e-3, n_folds=2, num_workers=0)
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)
LOGGED = ("train_loss", "valid_loss", "log_loss", "accuracy", "f1_macro", "lr", "seconds")


@pytest.fixture()
def quiet_trackers(monkeypatch):
    """No telemetry from either package (nothing leaves the machine), W&B keeps its files in tmp."""
    for k, v in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(k, v)


@pytest.fixture()
def mlflow_server(tmp_path, quiet_trackers):
    """``mlflow server`` on 127.0.0.1:<free port> with a sqlite store and a local artifact folder;
    (uri, artifact folder). Its process group is stopped afterwards, whatever happened."""
    port, art = free_port(), tmp_path / "mlflow_artifacts"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(art),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.time() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        yield uri, art
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _files_holding(folder: Path, text: str) -> list[Path]:
    return [f for f in folder.rglob("*") if f.is_file() and text.encode() in f.read_bytes()]


@pytest.mark.slow
def test_grid_logs_every_epoch_and_the_artifacts_to_mlflow(digits_comp, tmp_path, mlflow_server):
    """The server is given with a user and password in its URL (this one takes any): the runs use it,
    and no file of the runs, no parameter and nothing printed holds the password."""
    from mlflow.tracking import MlflowClient
    uri, art = mlflow_server
    secret_uri = uri.replace("http://", "http://alice:s3cret@")
    recipe = tmp_path / "tres.yaml"
    recipe.write_text(yaml.safe_dump({**TINY, "data_dir": str(digits_comp)}))
    runs = tmp_path / "runs"
    res = run_grid([recipe], [0, 1], runs_dir=str(runs), jobs=2,
                   overrides={"tracker": "mlflow", "tracker_uri": secret_uri})
    assert not res["failed"], res["failed"]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("digits-runs")              # the grid's group: <competition>-<runs folder>
    found = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(found) == ["tres_f0", "tres_f1"]
    for name, r in found.items():
        local = json.loads((runs / name / "metrics.json").read_text())
        assert r.info.status == "FINISHED" and r.data.params["backbone"] == "test_resnet"
        assert r.data.params["fold"] == name[-1] and r.data.tags["foldbook.model"] == "tres"
        for key in LOGGED:
            hist = sorted(client.get_metric_history(r.info.run_id, key), key=lambda m: m.step)
            assert [m.step for m in hist] == [0, 1], key
            assert [m.value for m in hist] == pytest.approx([e[key] for e in local["epochs"]]), key
        assert r.data.metrics["oof_log_loss"] == pytest.approx(local["log_loss"])
        assert r.data.metrics["best_epoch"] == local["best_epoch"]
        arts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert arts >= {"params.yaml", "metrics.json", "oof.csv", "curves.png", "env.json", f"{name}.ipynb",
                        f"{name}.log"}, arts
        got = client.download_artifacts(r.info.run_id, "oof.csv", str(tmp_path / f"dl_{name}"))
        assert pd.read_csv(got).equals(pd.read_csv(runs / name / "oof.csv"))
        stored = art / exp.experiment_id / r.info.run_id / "artifacts" / "curves.png"
        assert stored.read_bytes() == (runs / name / "curves.png").read_bytes()   # in the server's artifact root
        recorded = json.loads((runs / name / "tracker.json").read_text())["mlflow"]
        assert recorded["run_id"] == r.info.run_id and recorded["uri"] == uri.replace("http://", "http://***@")
        assert r.data.params["tracker_uri"] == uri.replace("http://", "http://***@")
        log = (runs / f"{name}.log").read_text()
        assert f"View run {name} at: http://***@127.0.0.1" in log            # MLflow's line, as printed
    assert _files_holding(tmp_path, "s3cret") == []       # runs/, notebooks, logs, the server's store

    # the recipe's full-data refit (no OOF): its training-sample check is logged instead, and the run finishes
    res = run_grid([recipe], [0], runs_dir=str(runs), overrides={"tracker": "mlflow", "tracker_uri": secret_uri},
                   full=True)
    assert not res["failed"], res["failed"]
    full = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}["tres_full"]
    local = json.loads((runs / "tres_full" / "metrics.json").read_text())
    assert full.info.status == "FINISHED" and not any(k.startswith("oof_") for k in full.data.metrics)
    assert full.data.metrics["train_sample_log_loss"] == pytest.approx(local["train_sample"]["log_loss"])
    assert _files_holding(tmp_path, "s3cret") == []


def _wandb_records(path: Path) -> list:
    """The protobuf records of a W&B run file (.wandb: a 7-byte header, then LevelDB-log chunks in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    out, pos, buf = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:                      # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):                               # a full record, or the last chunk of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
        elif kind == 0:
            break
    return out


class _Interrupt(Callback):
    def before_epoch(self):
        if self.epoch == 1:
            raise KeyboardInterrupt


def test_wandb_offline_run_files_hold_epochs_scores_and_artifacts(digits_comp, tmp_path, monkeypatch, quiet_trackers):
    wandb = pytest.importorskip("wandb")
    wb = tmp_path / "wandb_home"
    for k in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(k, str(wb / k.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "foldbook-test")
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path / "runs"), tracker="wandb", progress=False,
                      verbose=False, tracker_uri="http://alice:s3cret@unused:5000", **{**TINY, "epochs": 3})
    run = setup_run(cfg)
    run.learn.add_cb(_Interrupt())
    with pytest.raises(KeyboardInterrupt):
        fit(run)                                          # interrupted after epoch 1 ...
    summary = train_fold(cfg)                             # ... and resumed: the same W&B run goes on
    wandb.teardown()        # as at the kernel's exit: the W&B service writes the run file out and stops
    run_id = json.loads((tmp_path / "runs" / "test_resnet_f0" / "tracker.json").read_text())["wandb"]["run_id"]
    dirs = sorted((wb / "wandb_dir" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert dirs, list((wb / "wandb_dir").rglob("*"))[:20]
    history, summaries, config, files = [], {}, {}, set()
    for d in dirs:
        for rec in _wandb_records(d / f"run-{run_id}.wandb"):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "summary":
                summaries |= {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update}
            elif kind == "config":
                config |= {i.key: json.loads(i.value_json) for i in rec.config.update}
            elif kind == "files":
                files |= {f.path for f in rec.files.files}
        if (d / "files").is_dir():
            files |= {p.name for p in (d / "files").iterdir()}
    epochs = sorted((h for h in history if "log_loss" in h), key=lambda h: h["epoch"])
    assert [h["epoch"] for h in epochs] == [0, 1, 2], (history, sorted(summaries), [p.stat().st_size for p in
                                                                                   wb.rglob("*.wandb")])
    assert [h["log_loss"] for h in epochs] == pytest.approx([e["log_loss"] for e in summary["epochs"]])
    assert summaries["oof_log_loss"] == pytest.approx(summary["log_loss"])
    assert summaries["best_epoch"] == summary["best_epoch"]
    assert config["backbone"] == "test_resnet" and config["img_size"] == 24
    assert config["tracker_uri"] == "http://***@unused:5000"                 # the recipe as recorded
    assert files >= {"oof.csv", "curves.png", "metrics.json", "params.yaml"}, files


def test_trackers_are_imported_only_when_chosen(digits_comp, tmp_path):
    """Trains with tracker "none" where neither package can be imported (as on a machine without them;
    timm itself tries ``import wandb`` when it is installed), and names the package when one is chosen."""
    probe = ("import sys\nsys.modules['mlflow'] = sys.modules['wandb'] = None  # not installed\n"
             "from lib.core.config import TrainConfig\nfrom lib.train.loop import train_fold\n"
             f"train_fold(TrainConfig(data_dir={str(digits_comp)!r}, runs_dir={str(tmp_path)!r}, progress=False, "
             f"verbose=False, max_samples=40, **{dict(TINY, epochs=1)!r}))\n"
             "print(TrainConfig(tracker='mlflow').missing_files())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tracker 'mlflow': the mlflow package is not installed here" in out.stdout.strip().splitlines()[-1]
    assert json.loads((tmp_path / "test_resnet_f0" / "metrics.json").read_text())["complete"]
    assert not (tmp_path / "test_resnet_f0" / "tracker.json").exists()
    with pytest.raises(ValueError, match="tracker 'neptune': choose one of"):
        TrainConfig(tracker="neptune")
