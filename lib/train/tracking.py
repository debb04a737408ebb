"""Experiment tracking through the trackers teams already run: MLflow or Weights & Biases, opt-in.

    TrainConfig(..., tracker="mlflow", tracker_uri="http://mlflow.internal:5000")
    TrainConfig(..., tracker="wandb")    # W&B reads WANDB_API_KEY, WANDB_PROJECT, WANDB_MODE=offline...

What a run sends: its recipe (parameters), every epoch's record as it is scored (train_loss,
valid_loss, log_loss, accuracy, f1_macro, lr, seconds; step = epoch, from 0), and once the run is
complete its OOF scores (oof_log_loss, oof_accuracy, oof_f1_macro; a full-data run, with no OOF, its
train_sample_* check instead), best_epoch, minutes and files
(params.yaml, metrics.json, oof.csv, curves.png, env.json, the executed notebook as far as it ran and
its log). The runs of one grid share a group: the MLflow experiment, or the W&B group, named
``tracker_group`` (default ``<competition folder>-<runs folder>``). The tracker's run id is kept in
``runs/<run>/tracker.json``, so a resumed run (another process, another machine after ``make
restore``) goes on in the same tracker run. ``mlflow`` and ``wandb`` are imported only when chosen.

A ``tracker_uri`` with credentials (``http://user:pass@host``) is used as given but never recorded:
the parameters sent are the recipe as recorded (``TrainConfig.to_record``), tracker.json keeps the URI
with ``***``, and what MLflow prints (its "View run" line) and its errors are shown redacted.
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
import uuid
from contextlib import redirect_stdout
from pathlib import Path

from fastai.callback.core import Callback

from lib.core.io import read_json, write_json
from lib.core.paths import redact_text, redact_url, resolve
from lib.core.rundir import RunDir, model_name
from lib.train.callbacks import RunRecorder

FILES = (RunDir.PARAMS, RunDir.METRICS, RunDir.OOF, RunDir.CURVES, RunDir.ENV)
FINAL = ("log_loss", "accuracy", "f1_macro")


def group_name(cfg) -> str:
    """The MLflow experiment / W&B group of a run: ``tracker_group``, else <competition>-<runs folder>."""
    return cfg.tracker_group or f"{resolve(cfg.data_dir).name}-{resolve(cfg.runs_dir).name}"


def tracker_callback(cfg) -> Callback | None:
    """The recipe's tracker as a fastai callback (None for tracker "none")."""
    kinds = {"mlflow": MlflowTracker, "wandb": WandbTracker}
    return kinds[cfg.tracker](cfg) if cfg.tracker in kinds else None


def finish_tracking(cfg, summary: dict) -> bool:
    """Send a complete run's OOF scores and files and close its tracker run (``write_predictions``). The
    run is complete on disk already: a tracker that fails now is reported, not raised. Returns success."""
    cb = tracker_callback(cfg)
    if cb is None:
        return False
    try:
        cb.start()
        cb.finish(summary, run_files(cfg))
        return True
    except Exception as e:  # noqa: BLE001 - the run's files are written; the tracker only mirrors them
        print(f"{cfg.tracker}: the final scores and files of {cfg.name} were not logged ("
              + redact_text(f"{type(e).__name__}: {e})"), file=sys.stderr, flush=True)
        return False


def final_metrics(summary: dict) -> dict[str, float]:
    """What a complete run sends at its end: its OOF scores (``oof_<score>``) or, for a full-data run
    (no OOF, ``lib.predict.refit``), the check on a sample of its own training images (``train_sample_<score>``);
    and best_epoch, minutes."""
    scores = ({f"train_sample_{k}": summary["train_sample"][k] for k in FINAL} if summary.get("full_data")
              else {f"oof_{k}": summary[k] for k in FINAL})
    return {k: float(v) for k, v in {**scores, "best_epoch": summary.get("best_epoch"),
                                     "minutes": summary.get("minutes")}.items() if v is not None}


def run_files(cfg) -> list[Path]:
    """The files a complete run sends: its artifacts, and the grid's notebook and log of it when there."""
    run_dir = resolve(cfg.runs_dir) / cfg.name
    extra = [resolve(cfg.runs_dir) / f"{cfg.name}{ext}" for ext in (".ipynb", ".log")]
    return [p for p in [run_dir / f for f in FILES] + extra if p.is_file()]


def flat_params(cfg) -> dict[str, str]:
    """The recipe as recorded (credentials as ***) in text values (dicts and lists as JSON), as trackers
    store parameters."""
    return {k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in cfg.to_record().items()}


class TrackerCallback(Callback):
    """Opens (or resumes) the tracker run when the fit starts and sends each epoch's record once the
    run recorder has scored it. A tracker that cannot be reached at the start stops the run with its
    error; one that fails later is reported and training goes on."""
    order = 66  # after the run recorder (65) has scored the epoch, before StopWhenAsked (70) may end the fit

    def __init__(self, cfg):
        self.cfg, self.run_dir, self.group = cfg, resolve(cfg.runs_dir) / cfg.name, group_name(cfg)

    def before_fit(self):
        try:
            self.start()
        except Exception as e:  # noqa: BLE001 - raised again, without the URL's credentials its message may quote
            raise RuntimeError(f"{self.cfg.tracker}: the tracker run of {self.cfg.name} could not be opened: "
                               + redact_text(f"{type(e).__name__}: {e}")) from None

    def after_epoch(self):
        rec = next((cb for cb in self.learn.cbs if isinstance(cb, RunRecorder)), None)
        if rec is None or self.epoch < rec.start_epoch or not rec.history or rec.history[-1]["epoch"] != self.epoch:
            return  # an epoch skipped while resuming
        record = {k: float(v) for k, v in rec.history[-1].items() if k != "epoch"}
        try:
            self.log_epoch(int(self.epoch), record)
        except Exception as e:  # noqa: BLE001 - a tracker outage must not stop training
            print(f"{self.cfg.tracker}: epoch {self.epoch + 1} not logged ("
                  + redact_text(f"{type(e).__name__}: {e}") + "); training goes on", file=sys.stderr, flush=True)

    def saved_id(self) -> str | None:
        p = self.run_dir / "tracker.json"
        return (read_json(p).get(self.cfg.tracker) or {}).get("run_id") if p.exists() else None

    def save_id(self, **info) -> None:
        p = self.run_dir / "tracker.json"
        write_json(p, {**(read_json(p) if p.exists() else {}), self.cfg.tracker: info})

    def start(self) -> None:
        """Open this run's tracker run: the one recorded in tracker.json, else a new one with the recipe."""
        raise NotImplementedError

    def log_epoch(self, epoch: int, record: dict) -> None:
        raise NotImplementedError

    def finish(self, summary: dict, files: list[Path]) -> None:
        raise NotImplementedError


class MlflowTracker(TrackerCallback):
    """MLflow through its client API (no global active run): experiment = the group, run name = the run's."""

    def start(self) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
        self.client = MlflowClient(tracking_uri=self.cfg.tracker_uri)
        run_id = self.saved_id()
        if run_id:
            try:
                self.client.get_run(run_id)
            except MlflowException:
                run_id = None  # another server (a restored run): start a new tracker run
        if run_id:
            self.client.update_run(run_id, status="RUNNING")
        else:
            exp = self.client.get_experiment_by_name(self.group)
            try:
                exp_id = exp.experiment_id if exp else self.client.create_experiment(self.group)
            except MlflowException:  # another run of the grid created it meanwhile
                exp_id = self.client.get_experiment_by_name(self.group).experiment_id
            tags = {"foldbook.model": model_name(self.cfg.name), "foldbook.fold": str(self.cfg.fold),
                    "foldbook.backbone": self.cfg.backbone, "foldbook.run_dir": str(self.run_dir)}
            run_id = self.client.create_run(exp_id, run_name=self.cfg.name, tags=tags).info.run_id
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in flat_params(self.cfg).items()])
            self.save_id(run_id=run_id, experiment=self.group, uri=redact_url(self.client.tracking_uri))
        self.run_id = run_id

    def log_epoch(self, epoch: int, record: dict) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, epoch) for k, v in record.items()])

    def finish(self, summary: dict, files: list[Path]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in final_metrics(summary).items()]
        self.client.log_batch(self.run_id, metrics=metrics)
        for f in files:
            self.client.log_artifact(self.run_id, str(f))
        said = io.StringIO()
        with redirect_stdout(said):  # MLflow prints "View run ... at: <server URL>", credentials and all
            self.client.set_terminated(self.run_id, "FINISHED")
        print(redact_text(said.getvalue()), end="", flush=True)


class WandbTracker(TrackerCallback):
    """Weights & Biases: project $WANDB_PROJECT (else "foldbook"), group = the group, run name and id
    kept with the run; local files under $WANDB_DIR, else the runs folder (``runs/wandb/``)."""

    def start(self) -> None:
        import wandb
        saved = self.saved_id()
        run_id = saved or uuid.uuid4().hex[:12]
        active = wandb.run
        if active is not None and active.id == run_id:
            self.run = active
            return
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "foldbook"), group=self.group,
                              name=self.cfg.name, id=run_id, resume="allow", job_type="train",
                              dir=os.environ.get("WANDB_DIR") or str(resolve(self.cfg.runs_dir)),
                              reinit="finish_previous")
        if not saved:
            self.run.config.update(self.cfg.to_record(), allow_val_change=True)
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        self.save_id(run_id=run_id, project=self.run.project, group=self.group)

    def log_epoch(self, epoch: int, record: dict) -> None:
        self.run.log({"epoch": epoch, **record})

    def finish(self, summary: dict, files: list[Path]) -> None:
        self.run.summary.update(final_metrics(summary))
        for f in files:
            self.run.save(str(f), base_path=str(f.parent), policy="now")
        self.run.finish()
