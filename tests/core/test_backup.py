"""lib.core.backup against a real S3-compatible server (moto's, on a loopback port the test picks): a run killed
mid-training while it mirrors every epoch, the machine's runs/ lost, restored from the bucket and resumed,
ending with the metrics of an uninterrupted run; and the mirror's rules on a mounted folder."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from lib.core import backup
from lib.core.config import TrainConfig
from lib.ops import backup as backup_cli
from lib.train.distributed import free_port
from lib.train.loop import train_fold

TINY = dict(backbone="test_resnet", n_folds=3, fold=0, img_size=24, batch_size=32, epochs=4, lr=3e-3,
            progress=False, verbose=False, num_workers=0, run_name="tres_f0")
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)

CHILD = """
import sys, time
from fastai.callback.core import Callback
from lib.core.config import TrainConfig
from lib.train.loop import fit, setup_run, write_predictions

class SlowMachine(Callback):  # a slow epoch from the third on: time for the test to kill the run in the middle
    def before_epoch(self):
        if self.epoch >= 2:
            time.sleep(3)

run = setup_run(TrainConfig.from_yaml(sys.argv[1]))
run.learn.add_cb(SlowMachine())
fit(run)
write_predictions(run)
"""


@pytest.fixture()
def bucket(monkeypatch, tmp_path):
    """s3://foldbook-test/cars/runs on moto's S3 server at 127.0.0.1:<free port>; stopped afterwards."""
    from moto.server import ThreadedMotoServer
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import fsspec
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("foldbook-test")
    try:
        yield "s3://foldbook-test/cars/runs"
    finally:
        server.stop()


def _remote_metrics(url: str) -> dict | None:
    fs, root = backup.open_url(url)
    try:
        return json.loads(fs.cat_file(f"{root}/tres_f0/metrics.json"))
    except FileNotFoundError:
        return None


def test_killed_run_restored_from_s3_resumes_to_the_same_metrics(digits_comp, tmp_path, bucket):
    ref = train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path / "ref"), **TINY))

    runs = tmp_path / "lost_machine" / "runs"
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(runs), sync_to=bucket, **TINY)
    recipe = cfg.to_yaml(tmp_path / "recipe.yaml")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(recipe)], cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and child.poll() is None:
            m = _remote_metrics(bucket)
            if m and len(m["epochs"]) >= 2:
                break
            time.sleep(0.2)
        assert child.poll() is None, f"the run ended before it could be killed:\n{child.stdout.read()[-3000:]}"
        os.killpg(child.pid, signal.SIGKILL)  # the machine is lost in the middle of epoch 3
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    remote = _remote_metrics(bucket)
    assert not remote["complete"] and 2 <= len(remote["epochs"]) < TINY["epochs"]

    import shutil
    shutil.rmtree(runs.parent)                                  # the disk is gone
    table = backup.restore_runs(bucket, runs)
    assert table.loc[table["run"] == "tres_f0", "action"].iloc[0].startswith("restored")
    restored = runs / "tres_f0"
    for f in ("params.yaml", "classes.json", "state.pt", "model.safetensors", "metrics.json"):
        assert (restored / f).is_file(), f
    assert not list(restored.glob("*.tmp")) and not list(restored.glob(".*"))

    got = train_fold(cfg)                                       # the grid resumes it (the same command)
    assert len(got["epochs"]) == TINY["epochs"]
    for a, b in zip(ref["epochs"], got["epochs"]):
        for k in ("train_loss", "valid_loss", "log_loss", "accuracy", "f1_macro"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), (a["epoch"], k)
    for k in ("log_loss", "accuracy", "f1_macro", "best_epoch"):
        assert got[k] == pytest.approx(ref[k], rel=1e-6), k

    # nothing lost: the completed run went back to the bucket, and a third machine gets all of it
    assert _remote_metrics(bucket)["complete"]
    assert backup_cli.main(["restore", "--from", bucket, "--runs-dir", str(tmp_path / "third")]) == 0
    third = tmp_path / "third" / "tres_f0"
    for f in ("oof.csv", "test.csv", "curves.png", "env.json", "model.safetensors", "metrics.json"):
        assert (third / f).read_bytes() == (restored / f).read_bytes(), f
    again = backup.restore_runs(bucket, tmp_path / "third")     # already as far: nothing is overwritten
    assert again.loc[again["run"] == "tres_f0", "action"].iloc[0].startswith("kept")


def test_mirror_to_a_folder_sends_changes_only_and_never_loses_a_file(tmp_path):
    runs, dest = tmp_path / "runs", tmp_path / "mnt" / "backup"
    run = runs / "m_f0"
    run.mkdir(parents=True)
    (run / "params.yaml").write_text("fold: 0\n")
    (run / "state.pt").write_bytes(b"state 1")
    (run / "metrics.json").write_text(json.dumps({"complete": False, "epochs": [{"epoch": 0}]}))
    (runs / "m_f0.ipynb").write_text("{}")
    (runs / "browse").mkdir()
    (runs / "browse" / "img.png").symlink_to(run / "params.yaml")  # exports of lib.insight.browse stay local
    (run / ".state.pt.abc.tmp").write_bytes(b"half")                # an atomic write in flight
    first = backup.sync_runs(runs, str(dest))
    assert first.set_index("what").loc["m_f0", "uploaded"] == 3
    assert (dest / "m_f0" / "state.pt").read_bytes() == b"state 1" and (dest / "m_f0.ipynb").exists()
    assert not (dest / "browse").exists() and not list(dest.rglob("*.tmp"))
    assert backup.sync_runs(runs, str(dest))["uploaded"].sum() == 0   # unchanged: nothing sent
    (run / "state.pt").write_bytes(b"state 2 longer")
    (run / "metrics.json").write_text(json.dumps({"complete": False, "epochs": [{"epoch": 0}, {"epoch": 1}]}))
    assert backup.push_run(run, str(dest)) == 2
    assert (dest / "m_f0" / "state.pt").read_bytes() == b"state 2 longer"

    import shutil
    shutil.rmtree(runs)
    table = backup.restore_runs(str(dest), runs)
    assert json.loads((runs / "m_f0" / "metrics.json").read_text())["epochs"][-1]["epoch"] == 1
    assert (runs / "m_f0.ipynb").exists() and isinstance(table, pd.DataFrame)
    assert backup.sync_runs(runs, str(dest))["uploaded"].sum() == 0   # restored files keep their recorded mtimes
    (runs / "m_f0" / "state.pt").write_bytes(b"further along here")
    (runs / "m_f0" / "metrics.json").write_text(json.dumps({"complete": False, "epochs": [{}, {}, {}]}))
    backup.restore_runs(str(dest), runs)                              # the local copy is further: kept
    assert (runs / "m_f0" / "state.pt").read_bytes() == b"further along here"


def test_bad_destinations_are_named(tmp_path):
    (tmp_path / "runs").mkdir()
    with pytest.raises(ValueError, match="fsspec knows no protocol 'nosuch'"):
        backup.sync_runs(tmp_path / "runs", "nosuch://bucket/runs")
    with pytest.raises(ValueError, match="is inside .*another disk or bucket"):
        backup.sync_runs(tmp_path / "runs", str(tmp_path / "runs" / "mirror"))
    with pytest.raises(FileNotFoundError, match="nothing there to restore"):
        backup.restore_runs(str(tmp_path / "empty"), tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match="sync_to .nosuch://x.: fsspec knows no protocol"):
        from lib.ops.jobs import make_jobs
        recipe = tmp_path / "r.yaml"
        recipe.write_text("backbone: test_resnet\n")
        make_jobs([recipe], [0], overrides={"sync_to": "nosuch://x"})
    assert TrainConfig(sync_to="s3://b/runs").missing_files() == []


def test_a_bucket_key_outside_runs_is_refused_and_nothing_is_written(tmp_path):
    """A teammate's bucket is not trusted with the repo: run/../../lib/__init__.py must not land in lib/."""
    import fsspec
    fs = fsspec.filesystem("memory")
    root = f"/evil-{tmp_path.name}"
    fs.pipe(f"{root}/runs/a_f0/params.yaml", b"backbone: test_resnet\n")
    fs.pipe(f"{root}/runs/a_f0/metrics.json", b'{"complete": true, "epochs": [{}]}')
    runs = tmp_path / "repo" / "runs"
    runs.mkdir(parents=True)
    for key in ("a_f0/../../lib/__init__.py", "../outside.txt", "a_f0/./x", "/abs.txt"):
        fs.pipe(f"{root}/runs/{key}", b"print('pwned')")
        with pytest.raises(ValueError, match="refusing to restore .* outside .*nothing was restored"):
            backup.restore_runs(f"memory://{root}/runs", runs)
        fs.rm(f"{root}/runs/{key}")
        assert not (tmp_path / "repo" / "lib").exists() and not (tmp_path / "repo" / "outside.txt").exists()
        assert list(runs.iterdir()) == []
    assert backup.restore_runs(f"memory://{root}/runs", runs)["action"].iloc[0] == "restored 2 files"


def _run_folder(run, epochs: int, complete: bool = False, **recipe):
    """A run folder as training leaves it after ``epochs`` saved epochs (its params.yaml written once)."""
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "params.yaml").exists():
        TrainConfig(backbone="test_resnet", run_name=run.name, **recipe).to_yaml(run / "params.yaml")
    (run / "state.pt").write_bytes(b"s" * epochs)
    if complete:
        (run / "oof.csv").write_text("id,target\n")
    history = [{"epoch": k} for k in range(epochs)]
    (run / "metrics.json").write_text(json.dumps({"complete": complete, "epochs": history}))
    return run


def test_a_push_never_replaces_a_further_copy_or_another_recipe(tmp_path):
    """Machine A pushes a run as it advances, to its end; machine B's fresh run of the same name (another lr,
    or the same recipe started over) must not land beside A's oof.csv: refused, naming the run and the URL."""
    url = f"memory://push-{tmp_path.name}/runs"
    a = tmp_path / "A" / "m_f0"
    assert backup.push_run(_run_folder(a, 1, lr=1e-3), url) == 3          # params, state, metrics
    assert backup.push_run(_run_folder(a, 2), url) == 2                    # the next epoch: state, metrics
    assert backup.push_run(a, url) == 0                                    # the same state again: nothing sent
    assert backup.push_run(_run_folder(a, 6, complete=True), url) == 3     # complete: + oof.csv
    fs, root = backup.open_url(url)
    remote = {f: fs.cat_file(f"{root}/m_f0/{f}") for f in ("params.yaml", "metrics.json", "state.pt", "oof.csv")}

    b = _run_folder(tmp_path / "B" / "m_f0", 1, lr=3e-3)
    with pytest.raises(ValueError, match=r"run m_f0 .* to memory://push-.*/runs/m_f0: the copy there trained "
                                                 r"another recipe \(lr 0.001 there, 0.003 here\).*another run_name"):
        backup.push_run(b, url)
    c = _run_folder(tmp_path / "C" / "m_f0", 1, lr=1e-3)
    with pytest.raises(ValueError, match=r"further along \(complete, 6 saved epoch\(s\)\) than this one "
                                                 r"\(not complete, 1 saved epoch\(s\)\).*Restore it first"):
        backup.push_run(c, url)
    assert {f: fs.cat_file(f"{root}/m_f0/{f}") for f in remote} == remote  # A's run, whole
    assert backup.failed_pushes(a) == {} and list(backup.failed_pushes(b)) == [url]
    assert backup.failed_pushes(c, url)[url].startswith("PushRefused: not pushing run m_f0")
    assert backup.sync_runs(tmp_path / "B", url).set_index("what").loc["m_f0", "problem"].startswith("PushRefused")


def test_a_failed_push_is_recorded_and_sync_pushes_it_again(tmp_path, capsys):
    runs = tmp_path / "runs"
    run = _run_folder(runs / "m_f0", 2, complete=True)
    mnt = tmp_path / "mnt"
    mnt.write_text("the backup disk is not mounted: a file where its folder should be")
    url = str(mnt / "backup")
    with pytest.raises(NotADirectoryError):
        backup.push_run(run, url)
    assert backup_cli.main(["sync", "--runs-dir", str(runs), "--to", url]) == 1   # still failing: said, not 0
    assert "m_f0 NOT backed up: NotADirectoryError" in capsys.readouterr().err
    pushed = backup.last_pushes(run)[url]
    assert not pushed["ok"] and pushed["error"].startswith("NotADirectoryError") and pushed["complete"]
    assert pushed["epochs"] == 2 and pushed["at"]

    mnt.unlink()                                                                  # the disk is back
    assert backup_cli.main(["sync", "--runs-dir", str(runs), "--to", url]) == 0
    assert (mnt / "backup" / "m_f0" / "oof.csv").exists() and not (mnt / "backup" / "m_f0" / "backup.json").exists()
    assert backup.last_pushes(run)[url]["ok"] and backup.failed_pushes(run) == {}
    assert backup.sync_runs(runs, url)["uploaded"].sum() == 0                     # recording a push sends nothing


def test_a_run_whose_last_push_fails_fails_and_a_rerun_pushes_it_without_training(digits_comp, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.write_text("the bucket's mount is missing")
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path / "runs"), sync_to=str(mnt / "backup"),
                      **{**TINY, "epochs": 1})
    with pytest.raises(RuntimeError, match=r"tres_f0 is complete, but its backup to .*mnt/backup failed: "
                                           r"NotADirectoryError.*Nothing is retrained"):
        train_fold(cfg)
    metrics = tmp_path / "runs" / "tres_f0" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert json.loads(metrics.read_text())["complete"]
    mnt.unlink()
    got = train_fold(cfg)
    assert metrics.stat().st_mtime_ns == stamp                            # pushed, not trained again
    assert json.loads((mnt / "backup" / "tres_f0" / "metrics.json").read_text()) == got
    assert backup.failed_pushes(metrics.parent) == {}


def test_a_destination_password_is_never_written_down_or_shown(tmp_path):
    """sync_to with credentials: each push is recorded in backup.json under the URL with ``***``, and a
    refusal names it so; the URL as given still finds its record."""
    url = f"memory://bob:hunter2@pw-{tmp_path.name}/runs"
    shown = f"memory://***@pw-{tmp_path.name}/runs"
    a = _run_folder(tmp_path / "A" / "m_f0", 2, complete=True, sync_to=url)
    assert backup.push_run(a, url) == 4
    b = _run_folder(tmp_path / "B" / "m_f0", 1, sync_to=url)
    with pytest.raises(ValueError, match="not pushing run m_f0") as refused:
        backup.push_run(b, url)
    assert f"to {shown}/m_f0: the copy there is further along" in str(refused.value)
    assert list(backup.last_pushes(a)) == [shown] and list(backup.failed_pushes(b, url)) == [shown]
    assert backup.sync_runs(tmp_path / "B", url).set_index("what").loc["m_f0", "problem"].startswith("PushRefused")
    for run in (a, b):
        assert not [f for f in run.rglob("*") if f.is_file() and "hunter2" in f.read_text(errors="replace")]
    assert "hunter2" not in str(refused.value)
