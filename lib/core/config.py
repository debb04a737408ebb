"""The training recipe: every setting of one run, its default and what it means, in one place.

    cfg = TrainConfig.from_yaml("params/convnext_tiny.yaml", data_dir="data/cars", fold=3)
    cfg = TrainConfig(backbone="test_resnet", img_size=32, epochs=2)    # checked on creation
    run = setup_run(cfg)                                                 # lib.train.loop

Parameters flow one way: ``params/*.yaml`` -> 02_train's ``parameters`` cell (papermill's ``-f``
and ``-p``; flat names, later sources win) -> ``TrainConfig.from_notebook`` -> ``lib``. A run
writes its recipe to ``runs/<run>/params.yaml`` (``to_yaml``); re-prediction, analysis and resume
read it back with ``from_yaml``. Every name and choice is checked when a recipe is made, before any
file is written: a misspelt setting fails and names the valid ones.

A URL setting may carry a password (``tracker_uri: http://user:pass@host``, ``sync_to``): what a run
records, sends or shows is ``to_record()``, with the credentials as ``***`` (``lib.core.paths.redact_url``).
The full URL reaches a papermill run without being a parameter (papermill writes its parameters into
the executed notebook): the grid passes ``-p tracker_uri http://***@host`` and the full URL in
``$FOLDBOOK_TRACKER_URI`` (``SECRET_ENV``), and ``from_notebook`` puts it back (``with_credentials``).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lib.core import choices, rules
from lib.core.checks import check_types, unknown_message
from lib.core.io import write_yaml
from lib.core.paths import has_credentials, is_redacted, redact_url, resolve, same_path


@dataclass(frozen=True)
class TrainConfig:
    """One backbone on one fold. Sizes are pixels, learning rates peaks, ``epochs`` full passes."""
    # the competition
    data_dir: str = "data/fmnist"       # competition folder, relative to the repo root (or absolute)
    fold: int = 0                       # the validation fold of this run
    n_folds: int = 5                    # folds of the competition's folds.csv (made once, then fixed)
    scan_args: dict = field(default_factory=dict)  # a labels table: {"labels_csv": "train.csv", "label_col": "class"}
    group_col: str | None = None        # fold groups: a column of the labels table (e.g. duplicate groups)
    exclude_ids: str | None = None      # CSV with an `id` column left out of training (e.g. noisy labels)
    # teacher soft targets and full-data refit (lib.predict.teacher, lib.predict.refit: the fold rule there)
    teacher: str | None = None          # teacher table on train images (id, classes, held_out): distillation
    teacher_weight: float = 0.5         # the teacher's share of each training target: (1 - w) one-hot + w teacher
    teacher_temperature: float = 1.0    # teacher rows softened to p ** (1 / T), renormalised (T > 1 softer)
    pseudo_labels: str | None = None    # teacher table on test images: they join training (pseudo-labels)
    pseudo_threshold: float | None = None  # keep test images of teacher max prob >= this, hard; None: all, soft
    full_data: bool = False             # train on every image, no validation fold: <backbone>_full, no oof.csv
    max_samples: int | None = None      # cap train and valid images (smoke runs)
    # the model
    backbone: str = "resnet18"          # any timm model name, with or without a pretrained tag
    pretrained: str = "none"            # none | hub | path/to/weights.safetensors
    pool: str = "avg"                   # avg | max | avgmax | catavgmax | token | gem
    drop_rate: float = 0.0              # dropout before the classifier
    drop_path_rate: float = 0.0         # stochastic depth
    model_kwargs: dict = field(default_factory=dict)  # more timm model arguments, e.g. {"channels": [32, 64, 64, 128]}
    # the data the model sees
    img_size: int = 32                  # pixels, square
    presize: float = 1.0                # cache at presize x img_size px; train crops and valid resizes to img_size
    resize: str = "squash"              # how images become squares: squash (stretched) | pad (aspect kept)
    aug: str = "light"                  # lib.data.augment: none light medium heavy doc_noise randaugment ...
    hflip: bool = True                  # random horizontal flips in training (every preset but none)
    vflip: bool = False                 # random vertical flips in training (every preset but none)
    rot90: bool = False                 # random 90-degree rotations in training (every preset but none)
    mixup: float = 0.0                  # MixUp alpha (0 = off)
    cutmix: float = 0.0                 # CutMix alpha (0 = off); both on = one or the other per batch
    sampler: str = "shuffle"            # training draws: shuffle (each image once) | balanced (classes alike) | sqrt
    # the optimisation
    batch_size: int = 64
    epochs: int = 6
    lr: float = 2e-3                    # peak learning rate
    weight_decay: float = 0.05          # the optimizer's decay (not on norms and biases)
    layer_decay: float | None = None    # layer-wise lr decay, e.g. 0.75: lr x decay^(blocks above); None = off
    opt: str = "adamw"                  # timm optimizer: adamw | sgd (nesterov) | momentum | lion | lamb | nadamw ...
    opt_args: dict = field(default_factory=dict)  # its further arguments, e.g. {"betas": [0.9, 0.99]}
    freeze_epochs: int = 0              # fine-tuning: the first this many epochs train the head (and norms) alone
    schedule: str = "onecycle"          # onecycle | flat_cos | cosine_restarts | plateau (lower lr at a stall)
    warmup_pct: float = 0.1             # onecycle's share of warm-up steps
    restart_epochs: float = 1.0         # schedule cosine_restarts: the first cycle's epochs (lr down to lr / 1e5)
    restart_mult: float = 2.0           # schedule cosine_restarts: each cycle this many times the one before
    loss: str = "ce"                    # ce | focal | bi_tempered | asymmetric | soft_ce
    loss_args: dict = field(default_factory=dict)  # e.g. {"label_smoothing": 0.1} or {"gamma": 2.0}
    ema_epochs: float | None = None     # weight EMA averaging over about this many epochs, e.g. 1.0 (None = off)
    ema: float | None = None            # or the EMA as a per-step decay, e.g. 0.999 (not both; None = off)
    grad_accum: int = 1                 # batches per optimizer step
    grad_clip: float | None = None      # max gradient norm (None = off)
    precision: str = "auto"             # auto (bf16 where the GPU or CPU computes it natively) | fp32 | bf16
    monitor: str = "log_loss"           # best epoch and early stopping by: log_loss | accuracy | f1_macro | valid_loss
    best_epoch: str = "last"            # weights kept and predicted: last (epoch) | monitor (its best epoch)
    patience: int | None = None         # early stopping after this many epochs without gain
    seed: int = 42
    # weight averaging, progressive resizing, warm start, plateau lr (lib.train: averaging, stages, warmstart)
    swa_epochs: int | None = None       # SWA: average the weights of the last this many epochs (None = off)
    swa_lr: float | None = None         # those SWA epochs at this constant lr after the schedule (None: the schedule's)
    average_top_k: int | None = None    # or average the k best epochs' weights by monitor (optimistic OOF; None = off)
    stages: list | None = None          # progressive resizing: [[img_size, epochs(, lr)], ...], one cycle each
    init_from: str | None = None        # start from this run's model.safetensors: same fold, same folds.csv
    plateau_factor: float = 0.5         # schedule plateau: lr x this after plateau_patience epochs without gain
    plateau_patience: int = 1           # schedule plateau: epochs without a monitor gain before the lr drops
    # where and how it runs: these may change between an interrupted run and its resume
    devices: int | list = 1             # data-parallel processes: a count, or GPU ids like [0, 1] (or ["cpu", "cpu"])
    sync_bn: bool = False               # batch-norm statistics over all devices (CUDA only)
    grad_checkpointing: bool = False    # recompute activations in backward (timm's switch): less memory, ~25% slower
    compile: bool = False               # torch.compile the model (Inductor's on-disk caches shared by the grid)
    run_name: str | None = None         # default <backbone>_f<fold>
    runs_dir: str = "runs"              # the run lives in <runs_dir>/<run_name>/
    device: str | None = None           # None = cuda, then mps, then cpu
    num_workers: int | None = None      # DataLoader workers; None = what suits the platform
    cache: bool = True                  # train from the pre-resized image cache (else decode every epoch)
    resume: bool = True                 # continue an interrupted run after its last saved epoch
    force: bool = False                 # delete the run folder and train again
    progress: bool = True               # progress bars (off in headless grid runs)
    verbose: bool = True                # one line per epoch and what was decided
    tracker: str = "none"               # experiment tracker: none | mlflow | wandb (its package is imported only then)
    tracker_uri: str | None = None      # MLflow tracking server, e.g. http://host:5000 (None: $MLFLOW_TRACKING_URI)
    tracker_group: str | None = None    # MLflow experiment / W&B group; None: <competition folder>-<runs folder>
    sync_to: str | None = None          # mirror the run after each saved epoch to this fsspec URL (s3://b/runs, /mnt/x)

    def __post_init__(self):
        problems = check_types(self) or self.problems()
        if problems:
            raise ValueError("bad training settings:\n  - " + "\n  - ".join(problems))

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A recipe from a mapping; an unknown name fails and names the valid ones."""
        unknown = sorted(set(values) - set(field_names()))
        if unknown:
            raise ValueError(unknown_message(unknown, field_names(), "training setting"))
        return cls(**values)

    @classmethod
    def from_yaml(cls, path, **overrides) -> TrainConfig:
        """A recipe from a YAML file (``params/*.yaml`` or a run's ``params.yaml``); ``overrides`` win."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such recipe")
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a recipe is a mapping of setting: value, got {type(values).__name__}")
        try:
            return cls.from_dict({**values, **overrides})
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def from_notebook(cls, namespace: dict, notebook_only=()) -> TrainConfig:
        """The recipe from 02_train's globals once its parameters cell (and papermill's injected
        cell) ran. The cell before the parameters cell sets ``_names_before = set(globals())`` (kept out
        of the parameters cell, so ``papermill --help-notebook`` lists settings only): a plain value
        defined after it which is neither a setting nor in ``notebook_only`` is a misspelt parameter
        (e.g. ``-p lr_max 1e-3``) and fails here, before anything is written."""
        before = namespace.pop("_names_before", None)
        names = field_names()
        if before is not None:
            new = [k for k, v in namespace.items() if k not in before and not k.startswith("_")
                   and isinstance(v, (str, int, float, bool, list, dict, tuple, type(None)))]
            unknown = sorted(set(new) - set(names) - set(notebook_only))
            if unknown:
                raise ValueError(unknown_message(unknown, names, "parameter"))
        cfg = cls(**{k: namespace[k] for k in names if k in namespace})
        for name, env in SECRET_ENV.items():
            if has_credentials(getattr(cfg, name)):
                shown = redact_url(getattr(cfg, name))
                warnings.warn(f"{name} holds credentials: the run records it as {shown!r}, but this notebook's "
                              f"parameters keep it whole (papermill writes them into the executed notebook). Pass "
                              f"-p {name} '{shown}' and the full URL in ${env} (what the grid does), or the URL "
                              f"without credentials and them in {CREDENTIALS[name]}", stacklevel=2)
        return cfg.with_credentials()

    def with_credentials(self, environ=None) -> TrainConfig:
        """This recipe with each redacted URL setting (``http://***@host``, as ``to_record`` writes it)
        replaced by the full URL in its environment variable (``SECRET_ENV``, from ``environ``, default
        ``os.environ``) that redacts to it. Raises, saying what to do, when that variable is unset or holds
        another URL: a redacted URL has lost its password."""
        environ = os.environ if environ is None else environ
        full = {}
        for name, env in SECRET_ENV.items():
            value = getattr(self, name)
            if not is_redacted(value):
                continue
            given = environ.get(env)
            if not given or redact_url(given) != value:
                why = f"${env} is unset" if not given else f"${env} holds another URL ({redact_url(given)!r})"
                raise ValueError(f"{name} {value!r} is a recorded URL whose credentials were replaced by *** ({why}); "
                                 f"set ${env} to the full URL, or give {name} without credentials and them in "
                                 f"{CREDENTIALS[name]}")
            full[name] = given
        return self.replace(**full) if full else self

    def to_dict(self) -> dict:
        """Every setting as it is, credentials in ``tracker_uri``/``sync_to`` included: for this process only."""
        return dataclasses.asdict(self)

    def to_record(self) -> dict:
        """Every setting as a run records it (params.yaml, tracker parameters, messages): ``to_dict`` with
        the credentials of its URL settings (``SECRET_ENV``) replaced by ``***``."""
        out = self.to_dict()
        return {**out, **{k: redact_url(out[k]) for k in SECRET_ENV}}

    def to_yaml(self, path) -> Path:
        """Write the recipe as recorded (``to_record``) atomically; ``from_yaml`` reads it back equal, but
        for the credentials of a URL setting."""
        return write_yaml(path, self.to_record())

    def __repr__(self) -> str:
        return f"TrainConfig({', '.join(f'{k}={v!r}' for k, v in self.to_record().items())})"

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- derived

    @property
    def name(self) -> str:
        """The run's name: ``run_name``, else ``<backbone>_f<fold>`` (``<backbone>_full`` with ``full_data``)."""
        return self.run_name or f"{self.backbone}_{'full' if self.full_data else f'f{self.fold}'}"

    def differences(self, other: TrainConfig | dict) -> dict:
        """{setting: (self's, other's)} for the settings that make a run another run (``RUNTIME``
        settings may differ between a run and its resume). Path settings (``PATHS``) are compared as
        the files they name: ``data/cars`` and ``/abs/repo/data/cars`` are one recipe."""
        mine, theirs = self.to_dict(), other.to_dict() if isinstance(other, TrainConfig) else dict(other)
        theirs.setdefault("run_name", None)
        if mine.get("run_name") is None or theirs.get("run_name") is None:  # a default name is the same run
            mine["run_name"] = theirs["run_name"] = None
        return {k: (mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs))
                if k not in RUNTIME and not _same_setting(k, mine.get(k), theirs.get(k))}

    @property
    def cache_size(self) -> int:
        """Pixels of the pre-resized images (``lib.data.dataset``): ``presize`` x ``img_size``, rounded."""
        return round(self.presize * self.img_size)

    # ---------------------------------------------------------------- checks

    def problems(self) -> list[str]:
        """Every value that lib would refuse later, as readable lines (empty when all is well)."""
        out = []
        for name, options in (("aug", choices.AUGMENTATIONS), ("loss", choices.LOSS_ARGS),
                              ("schedule", choices.SCHEDULES), ("monitor", choices.MONITORS),
                              ("opt", choices.OPT_ARGS), ("sampler", choices.SAMPLERS),
                              ("precision", choices.PRECISIONS), ("pool", choices.POOLS),
                              ("tracker", choices.TRACKERS), ("best_epoch", choices.BEST_EPOCHS),
                              ("resize", choices.RESIZES)):
            if getattr(self, name) not in options:
                out.append(f"{name} {getattr(self, name)!r}: choose one of {sorted(options)}")
        if self.n_folds < 2:
            out.append(f"n_folds {self.n_folds}: need at least 2")
        elif not 0 <= self.fold < self.n_folds:
            out.append(f"fold {self.fold} not in 0..{self.n_folds - 1}")
        for name in ("img_size", "batch_size", "epochs", "grad_accum"):
            if getattr(self, name) < 1:
                out.append(f"{name} {getattr(self, name)}: must be >= 1")
        if not self.presize >= 1:
            out.append(f"presize {self.presize}: the cache's size as a multiple of img_size, >= 1 (1: cache at "
                       "img_size; e.g. 1.25 caches 1.25 x img_size and crops or resizes down to img_size)")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            out.append(f"layer_decay {self.layer_decay}: a factor in (0, 1], e.g. 0.75, or None")
        if self.lr <= 0:
            out.append(f"lr {self.lr}: must be > 0")
        if not 0 <= self.warmup_pct < 1:
            out.append(f"warmup_pct {self.warmup_pct}: must be in [0, 1)")
        if self.mixup < 0 or self.cutmix < 0:
            out.append("mixup and cutmix are Beta-distribution alphas: >= 0 (0 = off)")
        if self.ema is not None and not 0 < self.ema < 1:
            out.append(f"ema {self.ema}: a decay in (0, 1), e.g. 0.999, or None")
        if self.ema_epochs is not None and not self.ema_epochs > 0:
            out.append(f"ema_epochs {self.ema_epochs}: a horizon in epochs > 0, e.g. 1.0, or None")
        if self.ema is not None and self.ema_epochs is not None:
            out.append(f"ema {self.ema} and ema_epochs {self.ema_epochs} are two ways to set one EMA: keep "
                       "ema_epochs (a horizon in epochs) or ema (a per-step decay) and set the other to None")
        n_devices = len(self.devices) if isinstance(self.devices, list) else self.devices
        if n_devices < 1:
            out.append(f"devices {self.devices!r}: a count >= 1 or a non-empty list")
        elif self.batch_size % n_devices:
            out.append(f"batch_size {self.batch_size} is the global batch: it must divide by the {n_devices} devices")
        if self.patience is not None and self.patience < 1:
            out.append(f"patience {self.patience}: >= 1 epochs, or None")
        bad_scan = sorted(set(self.scan_args) - set(choices.SCAN_ARGS))
        if bad_scan:
            out.append(f"scan_args {bad_scan}: valid keys are {list(choices.SCAN_ARGS)}")
        takes = choices.LOSS_ARGS.get(self.loss)
        if takes is not None and set(self.loss_args) - set(takes):
            out.append(f"loss_args {sorted(self.loss_args)} do not fit loss {self.loss!r}, which takes {list(takes)}")
        takes = choices.OPT_ARGS.get(self.opt)
        if takes is not None and set(self.opt_args) - set(takes):
            out.append(f"opt_args {sorted(self.opt_args)} do not fit opt {self.opt!r}, which takes {list(takes)} "
                       "(lr and weight_decay are settings of their own)")
        return (out + rules.teacher_problems(self) + rules.refit_problems(self)
                + rules.averaging_problems(self) + rules.stage_problems(self))

    def missing_files(self) -> list[str]:
        """The files the recipe names for training (weights, exclude_ids) that are not there, and the
        packages its ``tracker`` and ``sync_to`` need that are not installed. Checked before training,
        not when a finished run's recipe is read back (a kernel may lack them)."""
        out = []
        if self.tracker != "none":
            try:
                found = importlib.util.find_spec(self.tracker) is not None
            except (ImportError, ValueError):  # a broken or blocked install
                found = False
            if not found:
                out.append(f"tracker {self.tracker!r}: the {self.tracker} package is not installed here; "
                           f"`make env EXTRAS=tracking` installs it (pip install -e '.[tracking]'), "
                           f"or set tracker 'none'")
        if self.sync_to:
            problem = rules.backup_problem(self.sync_to)
            if problem:
                out.append(f"sync_to {redact_url(self.sync_to)!r}: {problem}")
        if self.pretrained not in ("none", "hub") and not resolve(self.pretrained).is_file():
            out.append(f"pretrained {self.pretrained!r}: no such weights file; give 'none', 'hub' or a "
                       ".safetensors path (relative to the repo root or absolute)")
        if self.exclude_ids and not resolve(self.exclude_ids).is_file():
            out.append(f"exclude_ids {self.exclude_ids!r}: no such CSV")
        return out + rules.missing_tables(self)


# settings that may change between an interrupted run and its resume without making it another run
RUNTIME = frozenset({"runs_dir", "device", "num_workers", "cache", "resume", "force", "progress", "verbose",
                     "devices", "sync_bn", "grad_checkpointing", "compile", "tracker", "tracker_uri", "tracker_group",
                     "sync_to"})


# URL settings that may carry credentials: the environment variable that brings a papermill run the full
# URL (the parameter being the redacted one), and where else the credentials can live
SECRET_ENV = {"tracker_uri": "FOLDBOOK_TRACKER_URI", "sync_to": "FOLDBOOK_SYNC_TO"}
CREDENTIALS = {"tracker_uri": "~/.netrc or $MLFLOW_TRACKING_USERNAME / $MLFLOW_TRACKING_PASSWORD",
               "sync_to": "the file system's own settings (for s3://: AWS_* variables or ~/.aws/credentials)"}

# settings naming a file or folder (relative to the repo root, or absolute); pretrained's none and hub are names
PATHS = frozenset({"data_dir", "exclude_ids", "teacher", "pseudo_labels", "init_from", "pretrained"})
PATH_WORDS = frozenset({"none", "hub"})


def _same_setting(name: str, a, b) -> bool:
    if a == b:
        return True
    return (name in PATHS and isinstance(a, str) and isinstance(b, str) and not {a, b} & PATH_WORDS
            and same_path(a, b))


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def defaults() -> dict:
    """Every setting's default value."""
    return TrainConfig().to_dict()


def legacy_settings(recorded: dict) -> dict:
    """The settings a run's recorded recipe (its params.yaml) lacks because they came later, with the
    values that say what that run did: ``best_epoch`` "monitor" (it kept its best epoch's weights) and
    the flips its preset hard-coded then (doc_noise: all three; light, medium, heavy: hflip only)."""
    doc = recorded.get("aug") == "doc_noise"
    then = {"best_epoch": "monitor", "hflip": True, "vflip": doc, "rot90": doc,
            "teacher_weight": 0.5, "teacher_temperature": 1.0, "full_data": False,  # teacher off, fold runs
            "plateau_factor": 0.5, "plateau_patience": 1,  # no plateau schedule
            "opt": "adamw", "opt_args": {}, "freeze_epochs": 0, "sampler": "shuffle",  # AdamW, nothing frozen
            "restart_epochs": 1.0, "restart_mult": 2.0,  # no restarts
            "presize": 1.0, "resize": "squash"}  # the cache at img_size, squashed
    return {k: v for k, v in then.items() if k not in recorded}
