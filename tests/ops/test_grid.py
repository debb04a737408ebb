"""lib.ops.grid: the backbone x fold grid through papermill, skipping, failure reports, kill -9 resume, Ray."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
import yaml
from shared import start_and_kill

from lib.core.config import TrainConfig
from lib.core.paths import repo_root
from lib.data.competition import scan_competition
from lib.ops.grid import main, overrides, parse_folds, parse_value, parse_yaml
from lib.ops.jobs import NOTEBOOK, GridClock, make_jobs, run_command, run_env
from lib.ops.ray_grid import RayOptions
from lib.ops.runner import run_grid
from lib.train.loop import train_fold

TINY = {"backbone": "test_resnet", "img_size": 24, "batch_size": 32, "epochs": 1, "lr": 0.003, "n_folds": 2}
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)


def _params(tmp_path, name, **kw):
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({**TINY, **kw}))
    return p


def test_parse_folds_and_values():
    assert parse_folds("0-4") == [0, 1, 2, 3, 4] and parse_folds("0,2") == [0, 2] and parse_folds("3") == [3]
    assert [parse_value(v) for v in ("3", "1e-3", "False", "None", "data/x")] == [3, 1e-3, False, None, "data/x"]


def test_yaml_overrides_pass_lists_and_dicts_to_every_job(tmp_path, capsys):
    """``-y`` as papermill's: a YAML mapping, so lists and dicts reach the recipe typed; ``-p`` wins over it."""
    given = overrides([parse_yaml("{stages: [[16, 1], [24, 1]], loss_args: {label_smoothing: 0.1}, img_size: 32}"),
                       parse_yaml("run_name: '007'")], [("img_size", "24"), ("hflip", "False")])
    assert given == {"stages": [[16, 1], [24, 1]], "loss_args": {"label_smoothing": 0.1}, "img_size": 24,
                     "run_name": "007", "hflip": False}
    job = make_jobs([_params(tmp_path, "y", epochs=2)], [0], runs_dir=str(tmp_path / "runs"),
                    overrides={k: v for k, v in given.items() if k != "run_name"})[0]
    assert job.cfg.stages == [[16, 1], [24, 1]] and job.cfg.loss_args == {"label_smoothing": 0.1}
    cmd = job.command()
    assert yaml.safe_load(cmd[cmd.index("-y") + 1])["stages"] == [[16, 1], [24, 1]]      # and its papermill command
    for bad, why in (("[identity, hflip]", "is not a YAML mapping"), ("{stages: [[16, 1]", "is not YAML")):
        with pytest.raises(SystemExit):
            main(["--params", "a.yaml", "-y", bad])
        assert f"argument -y/--yaml: '{bad}' {why}" in capsys.readouterr().err


@pytest.mark.slow
def test_grid_skips_complete_and_reports_broken(digits_comp, tmp_path):
    good = _params(tmp_path, "good", data_dir=str(digits_comp))
    broken = _params(tmp_path, "broken", data_dir=str(digits_comp), backbone="test_convnext", img_size=8)
    runs = tmp_path / "runs"
    res = run_grid([good, broken], [0], runs_dir=str(runs), jobs=2)         # one good and one broken job at once
    assert res["done"] == ["good_f0"]
    assert [r for r, _, _ in res["failed"]] == ["broken_f0"]
    name, nb, err = res["failed"][0]
    assert "img_size 8 does not fit test_convnext" in err and os.path.exists(nb)   # says what is wrong
    assert (runs / "good_f0.ipynb").exists() and json.loads((runs / "good_f0" / "metrics.json").read_text())["complete"]
    # `tail -f runs/<run>.log`: the run's epoch line with its ETA, then the grid's
    log = (runs / "good_f0.log").read_text()
    assert re.search(r"epoch 1/1 .*s  eta 0:00:00", log), log[-2000:]
    assert re.search(r"\ngrid: [12]/2 epochs, [01]/2 runs trained, eta \d:\d\d:\d\d \(at \d\d:\d\d\)\n", log)
    again = run_grid([good], [0], runs_dir=str(runs))
    assert again["skipped"] == ["good_f0"] and not again["done"]


def test_the_command_line_gives_the_ray_flags_as_one_ray_options(monkeypatch):
    seen = {}
    monkeypatch.setattr("lib.ops.runner.run_grid", lambda *a, **k: seen.update(k) or
                        {"done": [], "skipped": [], "failed": []})
    assert main(["--params", "a.yaml", "--folds", "0-1", "--backend", "ray", "--address", "auto",
                 "--cpus-per-run", "8", "--gpus-per-run", "1", "--resources", '{"a100": 1}', "--max-retries", "5"]) == 0
    assert seen["ray"] == RayOptions("auto", 8, 1, {"a100": 1}, 5)
    main(["--params", "a.yaml"])
    assert seen["ray"] == RayOptions()                      # the flags' defaults are RayOptions' defaults
    assert seen["notebook"] == NOTEBOOK                     # and --notebook's the grid's


def test_runs_share_one_inductor_cache_through_their_environment(digits_comp, tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert run_env(tmp_path) == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / ".cache" / "torchinductor")}
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")
    assert run_env(tmp_path) == {}                                 # the grid's own setting: the runs inherit it
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    envs = []
    monkeypatch.setattr("lib.ops.runner.check_kernel", lambda: None)
    monkeypatch.setattr("lib.ops.runner.run_command", lambda cmd, log, env, cwd, on_line: envs.append(env) or (1, "x"))
    run_grid([_params(tmp_path, "env", data_dir=str(digits_comp))], [0, 1], runs_dir=str(tmp_path / "runs"), jobs=2)
    cache = str(repo_root() / ".cache" / "torchinductor")
    assert [e["TORCHINDUCTOR_CACHE_DIR"] for e in envs] == [cache, cache]


def test_grid_eta_counts_the_epochs_left_over_all_runs(tmp_path):
    jobs = make_jobs([_params(tmp_path, "a", epochs=4)], [0, 1], runs_dir=str(tmp_path / "runs"))
    clock = GridClock(jobs, parallel=2)
    assert clock.line("a_f0", "[I] papermill: Executing Cell 3") is None
    line = clock.line("a_f0", "epoch 1/4  train 0.5  valid 0.4  log_loss 0.4  acc 0.9  f1 0.9  60.0s  eta 0:03:00")
    assert line.startswith("grid: 1/8 epochs, 0/2 runs trained, eta 0:03:30")   # 7 epochs x 60 s / 2 at once
    clock.line("a_f1", "epoch 4/4  train 0.5  valid 0.4  log_loss 0.4  acc 0.9  f1 0.9  120.0s  eta 0:00:00  *")
    clock.finished("a_f1")
    line = clock.line("a_f0", "epoch 2/4  train 0.5  valid 0.4  log_loss 0.4  acc 0.9  f1 0.9  60.0s  eta 0:02:00")
    assert line.startswith("grid: 6/8 epochs, 1/2 runs trained, eta 0:02:00")   # 2 left x median 60 s, one at a time


def test_bad_recipes_are_refused_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backbone: [unclosed\n")
    with pytest.raises(yaml.YAMLError):
        make_jobs([bad], [0])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        make_jobs([tmp_path / "missing.yaml"], [0])
    typo = _params(tmp_path, "typo", agu="light")
    with pytest.raises(ValueError, match="typo.yaml.*'agu' \\(did you mean 'aug'\\?\\)"):
        run_grid([typo], [0], runs_dir=str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="aug 'no_such_preset'"):
        run_grid([_params(tmp_path, "preset", aug="no_such_preset")], [0], runs_dir=str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="unknown training setting 'lr_max'"):
        make_jobs([_params(tmp_path, "ok")], [0], overrides={"lr_max": "0.1"})
    assert not (tmp_path / "runs").exists()                          # nothing was written


@pytest.mark.slow
def test_kill_9_mid_run_resumes_to_the_same_metrics(digits_comp, tmp_path):
    params = {**TINY, "epochs": 5, "img_size": 48, "ema": 0.9, "data_dir": str(digits_comp)}
    p = _params(tmp_path, "killme", **{k: v for k, v in params.items()})
    runs = tmp_path / "runs"
    runs.mkdir()
    metrics = runs / "killme_f0" / "metrics.json"
    killed_at = start_and_kill(make_jobs([p], [0], runs_dir=str(runs))[0])
    assert not killed_at["complete"] and 2 <= len(killed_at["epochs"]) < 5
    res = run_grid([p], [0], runs_dir=str(runs))                      # the same command again
    assert res["done"] == ["killme_f0"], res
    resumed = json.loads(metrics.read_text())
    # the uninterrupted reference runs as the killed run did, in a fresh kernel through the grid: a
    # reference trained inside this long test process has differed by ~1e-4 in a clean-clone CI run
    assert run_grid([p], [0], runs_dir=str(tmp_path / "ref"))["done"] == ["killme_f0"]
    ref = json.loads((tmp_path / "ref" / "killme_f0" / "metrics.json").read_text())
    assert len(resumed["epochs"]) == len(ref["epochs"]) == 5
    for a, b in zip(ref["epochs"], resumed["epochs"]):
        for k in ("train_loss", "log_loss", "accuracy"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["epoch"], k)


@pytest.mark.slow
def test_a_run_of_another_recipe_is_never_skipped_as_complete(digits_comp, tmp_path, capsys):
    """The demo switched from digits to another competition in the same runs folder: the grid names
    what differs before training anything, and --force retrains exactly those runs."""
    other = shutil.copytree(digits_comp, tmp_path / "fmnist_like")
    recipe = _params(tmp_path, "demo")
    runs = tmp_path / "runs"
    on_digits = {"data_dir": str(digits_comp)}
    train_fold(make_jobs([recipe], [0], runs_dir=str(runs), overrides=on_digits)[0].cfg)
    assert run_grid([recipe], [0], runs_dir=str(runs), overrides=on_digits)["skipped"] == ["demo_f0"]
    stamp = (runs / "demo_f0" / "metrics.json").stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"(?s)demo_f0: data_dir '.*digits' recorded, '.*fmnist_like' asked.*--force"):
        run_grid([recipe], [0], runs_dir=str(runs), overrides={"data_dir": str(other)})
    with pytest.raises(ValueError, match="img_size 24 recorded, 32 asked"):
        run_grid([recipe], [0], runs_dir=str(runs), overrides={"data_dir": str(digits_comp), "img_size": 32})
    assert (runs / "demo_f0" / "metrics.json").stat().st_mtime_ns == stamp       # nothing was trained
    assert main(["--params", str(recipe), "--folds", "0", "--runs-dir", str(runs), "-p", "data_dir", str(other)]) == 2
    capsys.readouterr()
    assert main(["--params", str(recipe), "--folds", "0", "--runs-dir", str(runs), "-p", "data_dir", str(digits_comp),
                 "-y", "{loss_args: {label_smoothing: 0.1}, img_size: 32}", "-p", "img_size", "24"]) == 2
    err = capsys.readouterr().err                     # -y's dict reached the job's recipe; -p's img_size won
    assert "demo_f0: loss_args {} recorded, {'label_smoothing': 0.1} asked" in err and "img_size" not in err, err
    res = run_grid([recipe], [0], runs_dir=str(runs), overrides={"data_dir": str(other)}, force=True)
    assert res["done"] == ["demo_f0"]
    assert TrainConfig.from_yaml(runs / "demo_f0" / "params.yaml").data_dir == str(other)
    again = run_grid([recipe], [0], runs_dir=str(runs), overrides={"data_dir": str(other)}, force=True)
    assert again["skipped"] == ["demo_f0"] and not again["done"]                 # same recipe: kept


@pytest.mark.slow
def test_a_complete_run_whose_push_failed_is_listed_and_pushed_by_the_next_grid(digits_comp, tmp_path, capsys):
    """Not "0 failed" and skipped: the summary lists the failed backup, and a grid with its sync_to runs
    the job again, which pushes the run without training it again."""
    mnt = tmp_path / "mnt"
    mnt.write_text("the bucket's mount is missing: a file where its folder should be")
    url = str(mnt / "backup")
    p = _params(tmp_path, "bk", data_dir=str(digits_comp))
    runs = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="bk_f0 is complete, but its backup"):
        train_fold(make_jobs([p], [0], runs_dir=str(runs), overrides={"sync_to": url})[0].cfg)
    metrics = runs / "bk_f0" / "metrics.json"
    stamp = metrics.stat().st_mtime_ns
    assert main(["--params", str(p), "--folds", "0", "--runs-dir", str(runs)]) == 1   # no sync_to here: listed
    out = capsys.readouterr().out
    assert "0 failed, 1 backup(s) failed" in out and f"BACKUP FAILED bk_f0 -> {url}: NotADirectoryError" in out
    mnt.unlink()
    res = run_grid([p], [0], runs_dir=str(runs), overrides={"sync_to": url})
    assert res["pushed"] == ["bk_f0"] and not res["done"] and not res["failed"] and not res["backup_failed"], res
    assert metrics.stat().st_mtime_ns == stamp                                          # pushed, not retrained
    assert json.loads((mnt / "backup" / "bk_f0" / "metrics.json").read_text())["complete"]
    assert run_grid([p], [0], runs_dir=str(runs), overrides={"sync_to": url})["skipped"] == ["bk_f0"]


def test_a_url_with_credentials_reaches_the_run_but_not_its_command_or_notebook(digits_comp, tmp_path, monkeypatch):
    """A password in tracker_uri (here in the params file) or sync_to (here a -p override) is in no
    papermill argument and not in the notebook papermill writes (its injected parameters and metadata):
    the job's process gets the full URLs in its environment, and 02_train's recipe takes them back."""
    tracker, sync = "http://alice:s3cret@mlflow.internal:5000", "memory://bob:hunter2@bucket/runs"
    p = _params(tmp_path, "sec", data_dir=str(digits_comp), tracker_uri=tracker)
    job = make_jobs([p], [0], runs_dir=str(tmp_path / "runs"), overrides={"sync_to": sync})[0]
    assert (job.cfg.tracker_uri, job.cfg.sync_to) == (tracker, sync)
    cmd = job.command()
    assert not any("s3cret" in a or "hunter2" in a for a in cmd), cmd
    assert job.secret_env == {"FOLDBOOK_TRACKER_URI": tracker, "FOLDBOOK_SYNC_TO": sync}
    # papermill as the grid runs it, as far as the notebook with its injected parameters (not executed)
    job.notebook.parent.mkdir(parents=True)
    out = subprocess.run(cmd + ["--prepare-only"], env={**os.environ, **job.secret_env}, cwd=str(repo_root()),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = job.notebook.read_text()
    assert "s3cret" not in text and "hunter2" not in text
    nb = nbformat.read(job.notebook, as_version=4)
    assert nb.metadata.papermill.parameters["tracker_uri"] == "http://***@mlflow.internal:5000"
    # the parameters cell and papermill's injected one, run as the kernel runs them, then the recipe
    ns: dict = {}
    for cell in nb.cells:
        if {"parameters", "injected-parameters"} & set(cell.metadata.get("tags", [])):
            exec(cell.source, ns)
    assert ns["sync_to"] == "memory://***@bucket/runs"
    for k, v in job.secret_env.items():
        monkeypatch.setenv(k, v)
    cfg = TrainConfig.from_notebook(ns, notebook_only={"find_lr"})
    assert (cfg.tracker_uri, cfg.sync_to) == (tracker, sync)


def test_a_retried_job_appends_to_its_log_under_an_attempt_line(tmp_path):
    """A Ray retry (or the next grid) of a job keeps what its failed attempt printed; the tail it returns
    is its own."""
    log = tmp_path / "r_f0.log"
    code, tail = run_command([sys.executable, "-c", "print('epoch 1 saved'); raise SystemExit(3)"], log)
    assert code == 3 and tail == "epoch 1 saved"
    code, tail = run_command([sys.executable, "-c", "print('resumed after epoch 1')"], log)
    assert code == 0 and tail == "resumed after epoch 1"
    assert re.fullmatch(r"--- attempt 1 \(.+\) ---\nepoch 1 saved\n--- attempt 2 \(.+\) ---\nresumed after epoch 1\n",
                        log.read_text()), log.read_text()


@pytest.mark.slow
def test_force_deletes_once_in_the_driver_and_a_retried_attempt_resumes(digits_comp, tmp_path, monkeypatch):
    """--force on a changed run, whose first attempt is lost after 2 epochs and retried with the same command
    (what Ray does): the driver deleted the old run before launching, and the retry resumes the 2 saved
    epochs (before, every attempt carried force True and deleted them)."""
    recipe = _params(tmp_path, "re", data_dir=str(digits_comp), epochs=4, img_size=48)
    runs = tmp_path / "runs"
    train_fold(make_jobs([recipe], [0], runs_dir=str(runs), overrides={"epochs": 1})[0].cfg)  # a run of 1 epoch
    job, seen = make_jobs([recipe], [0], runs_dir=str(runs))[0], {}
    run_dir = job.run_dir

    def lost_then_retried(cmd, log, env, cwd, on_line):
        seen.update(cmd=cmd, there_at_launch=run_dir.exists())
        seen["killed"] = start_and_kill(job, epochs=2, cmd=cmd)             # attempt 1: its node is lost
        return run_command(cmd, log, env, cwd, on_line)                      # attempt 2: the same command
    monkeypatch.setattr("lib.ops.runner.run_command", lost_then_retried)
    res = run_grid([recipe], [0], runs_dir=str(runs), force=True)               # epochs 1 -> 4: another recipe
    assert res["done"] == ["re_f0"] and not res["failed"], res
    killed, done = seen["killed"], json.loads((run_dir / "metrics.json").read_text())
    assert not killed["complete"] and 2 <= len(killed["epochs"]) < 4
    assert done["complete"] and len(done["epochs"]) == 4
    assert done["epochs"][:len(killed["epochs"])] == killed["epochs"]         # resumed (same seconds), not redone
    # state.pt is saved before metrics.json: a kill between the two resumes after one epoch more than it listed
    resumed = re.findall(r"resuming re_f0 after epoch (\d)/4", (runs / "re_f0.log").read_text())
    assert resumed and int(resumed[0]) in (len(killed["epochs"]), len(killed["epochs"]) + 1), resumed
    assert not seen["there_at_launch"]                                          # deleted by the driver, once
    assert seen["cmd"][-3:] == ["-p", "force", "False"]


def test_two_params_files_giving_one_run_name_are_refused(tmp_path):
    """a/resnet.yaml and b/resnet.yaml both make resnet_f0: with --jobs 2 or Ray their jobs would write one
    run folder at once. Refused before anything runs, naming both files."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, b = _params(tmp_path / "a", "resnet"), _params(tmp_path / "b", "resnet", lr=0.01)
    with pytest.raises(ValueError, match=rf"{b} and {a} have one stem: .*runs would share the folders"):
        run_grid([a, b], [0, 1], runs_dir=str(tmp_path / "runs"), jobs=2)
    with pytest.raises(ValueError, match=rf"{a} is listed twice"):
        make_jobs([a, a], [0])
    assert not (tmp_path / "runs").exists()                                      # nothing was written


@pytest.mark.slow
def test_a_run_trained_on_another_exclude_ids_table_is_not_skipped(digits_comp, tmp_path, capsys):
    """The grid reuses a complete run only on the tables it trained on: a changed exclude_ids table stops it
    before anything runs, naming the run and the table (--force retrains it); a run made before data.json is
    skipped unchecked, and the grid says so."""
    noisy = tmp_path / "noisy.csv"
    ids = scan_competition(digits_comp, verbose=False).train["id"].tolist()
    pd.DataFrame({"id": ids[:4]}).to_csv(noisy, index=False)
    p = _params(tmp_path, "ex", data_dir=str(digits_comp), exclude_ids=str(noisy))
    runs = tmp_path / "runs"
    train_fold(make_jobs([p], [0], runs_dir=str(runs))[0].cfg)
    assert run_grid([p], [0], runs_dir=str(runs))["skipped"] == ["ex_f0"]       # unchanged: reused
    stamp = (runs / "ex_f0" / "metrics.json").stat().st_mtime_ns
    pd.DataFrame({"id": ids[:5]}).to_csv(noisy, index=False)
    with pytest.raises(ValueError, match=rf"(?s)ex_f0: exclude_ids table {noisy} changed .*--force"):
        run_grid([p], [0], runs_dir=str(runs))
    assert main(["--params", str(p), "--folds", "0", "--runs-dir", str(runs)]) == 2
    assert (runs / "ex_f0" / "metrics.json").stat().st_mtime_ns == stamp          # nothing was trained
    data = runs / "ex_f0" / "data.json"
    record = data.read_text()
    data.unlink()                                                                  # an older kit's run
    capsys.readouterr()
    assert run_grid([p], [0], runs_dir=str(runs))["skipped"] == ["ex_f0"]
    assert "1 run(s) made before data.json record no folds or tables" in capsys.readouterr().out
    data.write_text(record)
    assert run_grid([p], [0], runs_dir=str(runs), force=True)["done"] == ["ex_f0"]
    assert run_grid([p], [0], runs_dir=str(runs))["skipped"] == ["ex_f0"]       # its new record: reused
