"""Competitor's toolbox, items 1 and 4 of issue #19, measured on the demo competition (data/fmnist:
3,000 training images, 10 classes, 3 folds; its held-back solution.csv read only to score):

* distillation and pseudo-labels from a fold-safe teacher against the same recipe without them, at
  equal wall time (the students' epochs cut by the share of images they add), on fold 0;
* a full-data refit (all 3,000 images, the epochs the CV chose) against the 3-fold mean, on test
  (one 3-fold CV and one refit per seed, combined as 04's ``refit`` does).

    python -m bench.teacher_refit --runs-dir /tmp/toolbox --seeds 42 43

The teachers follow the fold rule of ``lib.predict.teacher``: student fold 0 learns only from fold-0 teachers
(which never saw fold 0's images): the recipe's own fold-0 run (seed 42), and the recipe trained
twice as long on fold 0; their predictions of their training images (distillation) and of the test
images (pseudo-labels), ``teacher_table``. Pseudo-label students train fewer epochs, so that their
image passes (rounded up) are the recipe's: equal time. Every run lives in
``--runs-dir`` (never the repo's runs/) and is reused when complete, with its measured wall seconds
(``bench_seconds.json``). "train s" is CPU seconds on one thread (``timed``). Prints one markdown row
per variant (mean over ``--seeds``) and each seed's.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.core.io import read_json, write_json
from lib.core.metrics import accuracy, log_loss
from lib.core.paths import resolve
from lib.core.rundir import cv_epochs
from lib.ops.demo_data import score_submission
from lib.predict.oof import fold_mean
from lib.predict.refit import refit_tests
from lib.predict.teacher import teacher_table
from lib.train.loop import train_fold

MODEL = "resnet"  # the recipe's fold runs: resnet_f0 (seed 42: also the teacher), resnet_f1, resnet_f2


def timed(cfg: TrainConfig) -> tuple[dict, float]:
    """(metrics.json, CPU seconds of setup + training + predictions); a complete run is reused with the
    seconds it took then. One thread, no loader workers: its CPU time is what its wall time would be
    on an idle core, whatever else runs on the machine (the wall seconds are kept beside it)."""
    d = resolve(cfg.runs_dir) / cfg.name
    if (d / "bench_seconds.json").exists():
        return read_json(d / "metrics.json"), read_json(d / "bench_seconds.json")["cpu_seconds"]
    t, c = time.perf_counter(), time.process_time()
    m = train_fold(cfg)
    s = round(time.process_time() - c, 1)
    write_json(d / "bench_seconds.json", {"cpu_seconds": s, "wall_seconds": round(time.perf_counter() - t, 1)})
    return m, s


def test_scores(data_dir, test: pd.DataFrame) -> tuple[float, float]:
    s = score_submission(data_dir, test)
    return s["test_accuracy"], s["test_log_loss"]


def row(item, variant, seconds, oof_acc, oof_ll, test_acc, test_ll) -> dict:
    return {"item": item, "variant": variant, "train s": seconds, "OOF acc": oof_acc, "OOF log loss": oof_ll,
            "test acc": test_acc, "test log loss": test_ll}


def mean_row(got: list[dict]) -> dict:
    """The rows of one variant's seeds as one: their mean scores and seconds."""
    return {**got[0], **{k: None if got[0][k] is None else float(np.mean([g[k] for g in got]))
                         for k in list(got[0])[2:]}}


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.teacher_refit", __doc__)
    ap.add_argument("--data-dir", default="data/fmnist", help="the demo competition (make demo builds it)")
    ap.add_argument("--params", default="params/demo/resnet.yaml", help="the recipe of teachers and students")
    ap.add_argument("--runs-dir", default="/tmp/foldbook_toolbox", help="where the runs go")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="seeds, each a full comparison")
    ap.add_argument("--threshold", type=float, default=0.9, help="pseudo_threshold of the hard variants")
    return ap


def main(argv=None) -> pd.DataFrame:
    a = parser().parse_args(argv)
    torch.set_num_threads(1)
    runs = resolve(a.runs_dir)
    if runs == resolve("runs"):
        raise SystemExit("give a scratch --runs-dir: the repo's runs/ is not for benchmarks")
    base = TrainConfig.from_yaml(a.params, data_dir=a.data_dir, n_folds=3, runs_dir=str(runs), progress=False,
                                 verbose=False, num_workers=0)
    t0 = time.perf_counter()
    timed(base.replace(fold=0, run_name=f"{MODEL}_f0"))  # the recipe's fold 0: the first teacher
    long_m, long_s = timed(base.replace(epochs=2 * base.epochs, run_name="long_f0"))
    tables = {}
    for teacher in (f"{MODEL}_f0", "long_f0"):  # fold-0 teachers only: the fold rule of student fold 0
        tables[teacher] = {split: runs / f"{teacher}_{split}.csv" for split in ("train", "test")}
        for split, path in tables[teacher].items():
            teacher_table([runs / teacher], split, path)
    test_t = pd.read_csv(tables[f"{MODEL}_f0"]["test"], dtype={"id": str})
    classes = [c for c in test_t.columns if c not in ("id", "held_out")]
    n_train = len(pd.read_csv(tables[f"{MODEL}_f0"]["train"]))

    def hard(teacher: str) -> int:
        p = pd.read_csv(tables[teacher]["test"])[classes].to_numpy()
        return int((p.max(axis=1) >= a.threshold).sum())

    def epochs_for(extra: int) -> int:  # equal time: image passes of the recipe, rounded up for the
        return -(-base.epochs * n_train // (n_train + extra))  # per-epoch validation pass the student skips

    def pseudo(teacher: str, n: int | None, note: str = "") -> tuple[str, dict]:
        e = epochs_for(n if n is not None else len(test_t))
        what = f"pseudo_threshold {a.threshold}: {n} of {len(test_t)}, hard" if n is not None else \
            f"all {len(test_t)}, soft"
        return f"{what}, {e} epochs{note}", dict(pseudo_labels=str(tables[teacher]["test"]), epochs=e,
                                           pseudo_threshold=a.threshold if n is not None else None)
    r, lg = f"{MODEL}_f0", "long_f0"
    variants = [("base", "distillation / pseudo-labels", "none: the recipe, 8 epochs", {}),
                ("kd", "distillation", "teacher_weight 0.5", dict(teacher=str(tables[r]["train"]))),
                ("kdT2", "distillation", "teacher_weight 0.5, teacher_temperature 2",
                 dict(teacher=str(tables[r]["train"]), teacher_temperature=2.0)),
                ("kdlong", "distillation", "teacher_weight 0.5, from the 16-epoch teacher",
                 dict(teacher=str(tables[lg]["train"]))),
                ("plhard", "pseudo-labels", *pseudo(r, hard(r))),
                ("plsoft", "pseudo-labels", *pseudo(r, None)),
                ("pllong", "pseudo-labels", *pseudo(lg, hard(lg), ", from the 16-epoch teacher"))]
    rows, per_seed = [], []
    for key, item, name, extra in variants:
        got = []
        for seed in a.seeds:
            run_name = f"{MODEL}_f0" if (key, seed) == ("base", 42) else f"{key}_s{seed}_f0"
            m, s = timed(base.replace(fold=0, seed=seed, run_name=run_name, **extra))
            test = pd.read_csv(runs / run_name / "test.csv", dtype={"id": str})
            got.append(row(item, name, s, m["accuracy"], m["log_loss"], *test_scores(a.data_dir, test)))
            per_seed.append({**got[-1], "seed": seed})
        rows.append(mean_row(got))
    long_test = pd.read_csv(runs / "long_f0" / "test.csv", dtype={"id": str})
    rows.append(row("(the teachers)", "the recipe at 16 epochs, fold 0, seed 42: the second teacher", long_s,
                    long_m["accuracy"], long_m["log_loss"], *test_scores(a.data_dir, long_test)))

    # full-data refit against the 3-fold mean, per seed, the way 04 does it (lib.predict.refit.refit_tests)
    refit_rows = ([], [], [])
    for seed in a.seeds:
        model = MODEL if seed == 42 else f"cv{seed}"
        dirs = [runs / f"{model}_f{k}" for k in range(3)]
        fold_s = sum(timed(base.replace(fold=k, seed=seed, run_name=d.name))[1] for k, d in enumerate(dirs))
        epochs = cv_epochs(runs, model)
        full_s = timed(base.replace(full_data=True, epochs=epochs, seed=seed, run_name=f"{model}_full"))[1]
        tests = {model: fold_mean([pd.read_csv(d / "test.csv", dtype={"id": str}) for d in dirs], dirs, classes)}
        oof = pd.concat([pd.read_csv(d / "oof.csv") for d in dirs])
        y, p = oof["target"].to_numpy(), oof[classes].to_numpy(np.float64)
        got = [row("full-data refit", "none: the 3-fold mean (3 runs x 8 epochs on 2,000 images)", fold_s,
                   accuracy(y, p), log_loss(y, p), *test_scores(a.data_dir, tests[model])),
               row("full-data refit", f"refit replace: one run, {epochs} epochs on 3,000 images", full_s, None, None,
                   *test_scores(a.data_dir, refit_tests(tests, runs, classes, "replace")[0][model])),
               row("full-data refit", "refit blend 0.5: fold mean and full model (4 runs)", fold_s + full_s, None,
                   None, *test_scores(a.data_dir, refit_tests(tests, runs, classes, "blend", 0.5)[0][model]))]
        for bucket, r in zip(refit_rows, got):
            bucket.append(r)
            per_seed.append({**r, "seed": seed})
    rows += [mean_row(got) for got in refit_rows]
    table = pd.DataFrame(rows)
    print(f"whole benchmark {time.perf_counter() - t0:.0f} s wall this call; train s: CPU seconds, one thread")
    print(_markdown(table))
    print("\nper seed:\n" + _markdown(pd.DataFrame(per_seed)))
    return table


def _markdown(df: pd.DataFrame) -> str:
    def fmt(col, v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        return f"{v:.1f}" if col == "train s" else f"{v:.4f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(c, v) for c, v in zip(df.columns, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
