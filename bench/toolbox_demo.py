"""Weight averaging, progressive resizing and the plateau schedule against the same recipe without
them, at equal training time, on the demo competition (issue #19, items 2, 3 and 5).

    python -m bench.toolbox_demo                                  # every variant, seeds 42-46
    python -m bench.toolbox_demo --variants baseline stages --seeds 42

What it runs: ``params/demo/resnet.yaml`` (timm ``test_resnet`` from scratch, 32 px, 8 epochs) on
fold 0 of ``data/fmnist`` (3,000 Fashion-MNIST training images in 3 folds, its folds.csv; 1,000 test
images) through ``lib.train.loop`` (``setup_run``, ``fit``, ``write_predictions``) with ``force`` in a
scratch runs folder (``--runs-dir``, default ``/tmp/d_runs``), every variant back to back in one
process, seed by seed, so they share the machine's load. A variant changes only its own settings
(``VARIANTS``); where it makes epochs cheaper (smaller images) it gets more of them, so that its
training time matches the baseline's: progressive resizing trains 4 epochs at 16 px, then 6 at 32
(a 16 px step costs about half a 32 px one here), or 4 at 24 px, then 5 at 32; the averaging
variants train 7 epochs, as their BatchNorm pass over the training images costs about one more. ``train s`` is
``fit``'s wall time (the epochs, their validation, and for the averaging variants the averaging and
its BatchNorm pass; not the one-time image cache nor the final predictions; the JSON has the
process's CPU seconds too, though torch's threads spin while they wait, so those grow with the load
as well). Scores: OOF (the 1,000 fold-0 images) and test (the held-back ``solution.csv``, read only
here, through ``lib.ops.demo.score_submission``), accuracy and log loss, averaged over the seeds
(training seconds: their median). Writes ``<runs-dir>/toolbox_demo.json`` and prints a markdown
table whose ``gain?`` names the scores where a variant's mean differs from the baseline's by more
than twice the standard error of that difference (from both seed-to-seed spreads); the rest is noise.
The load average is printed before and after: wall times move with other work on the machine (on 2
cores a second busy process can make an epoch 10x slower), so the script also times a training step
at 16, 24 and 32 px in alternating rounds (``step_cost``): ratios the load does not move.
"""
from __future__ import annotations

import argparse
import datetime
import os
import time

import numpy as np
import pandas as pd

from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.core.device import cpu_name
from lib.core.io import write_json
from lib.core.paths import resolve
from lib.ops.demo_data import score_submission
from lib.train.loop import fit, setup_run, write_predictions

RECIPE = "params/demo/resnet.yaml"
# name -> (item of the issue, what it changes)
VARIANTS = {
    "baseline": ("-", {}),
    "swa": ("A: SWA", {"swa_epochs": 3, "epochs": 7}),
    "swa_lr": ("A: SWA", {"swa_epochs": 3, "swa_lr": 1e-3, "epochs": 7}),
    "top_k": ("A: top-k", {"average_top_k": 3, "epochs": 7}),
    "stages": ("B: progressive resizing", {"stages": [[16, 4], [32, 6]], "epochs": 10}),
    "stages_24": ("B: progressive resizing", {"stages": [[24, 4], [32, 5]], "epochs": 9}),
    "plateau": ("D: plateau", {"schedule": "plateau"}),
}


def run_variant(name: str, seed: int, data_dir: str, runs_dir: str, fold: int = 0) -> dict:
    """Train one variant on one seed; its scores and training seconds."""
    cfg = TrainConfig.from_yaml(RECIPE, data_dir=data_dir, n_folds=3, fold=fold, seed=seed, runs_dir=runs_dir,
                                run_name=f"{name}_s{seed}", force=True, progress=False, verbose=False,
                                **VARIANTS[name][1])
    run = setup_run(cfg)
    t0, c0 = time.time(), time.process_time()
    fit(run)
    seconds, cpu = time.time() - t0, time.process_time() - c0
    m = write_predictions(run)
    test = score_submission(resolve(data_dir), pd.read_csv(run.dir / "test.csv", dtype={"id": str}))
    return {"variant": name, "seed": seed, "train_s": round(seconds, 1), "cpu_s": round(cpu, 1),
            "oof_acc": m["accuracy"], "oof_log_loss": m["log_loss"], "test_acc": test["test_accuracy"],
            "test_log_loss": test["test_log_loss"], "averaging": m["averaging"], "epochs": len(m["epochs"])}


def step_cost(sizes=(16, 32), rounds: int = 7, batch: int = 64) -> dict:
    """Seconds per training step (forward, backward, AdamW) of the recipe's model at each size, timed
    in alternating rounds on random images so that both sizes see the same load: the median of
    ``rounds`` rounds of 5 steps. Wall times of whole runs move with other work on the machine; this
    ratio does not, and it is what sets the stages' epochs."""
    import torch
    import torch.nn.functional as F

    from lib.model.factory import build_model
    cfg = TrainConfig.from_yaml(RECIPE)
    model, _ = build_model(cfg, 10)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    times = {s: [] for s in sizes}
    for r in range(rounds + 1):
        for s in sizes:
            x, y = torch.randn(batch, 3, s, s), torch.randint(0, 10, (batch,))
            t0 = time.perf_counter()
            for _ in range(5):
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
            if r:  # the first round warms up
                times[s].append((time.perf_counter() - t0) / 5)
    return {s: float(np.median(t)) for s, t in times.items()}


def table(rows: list[dict]) -> str:
    """Markdown: one line per variant: the median training seconds (robust to a burst of other work
    during one run) and the mean scores over seeds; gain? against the baseline (``_gain``)."""
    keys = ("train_s", "cpu_s", "oof_acc", "oof_log_loss", "test_acc", "test_log_loss")
    by = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    vals = {v: {k: np.array([r[k] for r in rs], dtype=float) for k in keys} for v, rs in by.items()}
    out = ["| item | variant | train s | OOF acc | OOF log loss | test acc | test log loss | gain? |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for v, x in vals.items():
        item, changes = VARIANTS[v]
        what = ", ".join(f"{k}: {c}" for k, c in changes.items()) or "params/demo/resnet.yaml as it is"
        gain = "-" if v == "baseline" or "baseline" not in vals else _gain(x, vals["baseline"])
        m = {k: np.median(x[k]) if k == "train_s" else x[k].mean() for k in keys}
        out.append(f"| {item} | {v} ({what}) | {m['train_s']:.1f} | {m['oof_acc']:.4f} | "
                   f"{m['oof_log_loss']:.4f} | {m['test_acc']:.4f} | {m['test_log_loss']:.4f} | {gain} |")
    return "\n".join(out)


def _gain(x: dict, base: dict) -> str:
    """Log loss and accuracy, OOF and test, against the baseline over the same seeds: a mean difference
    beyond twice its standard error (from the seed-to-seed spread of both) counts, better or worse;
    within it is noise."""
    said = []
    for k, better in (("oof_log_loss", -1), ("test_log_loss", -1), ("oof_acc", 1), ("test_acc", 1)):
        d = x[k].mean() - base[k].mean()
        se = np.sqrt(x[k].var(ddof=1) / len(x[k]) + base[k].var(ddof=1) / len(base[k])) if len(x[k]) > 1 else 0.0
        if abs(d) > 2 * se:
            said.append(f"{'better' if d * better > 0 else 'worse'} {k.replace('_', ' ')} {d:+.4f}")
    return ("; ".join(said) if said else "no (within seed noise)") + f" [{len(x['oof_acc'])} seeds]"


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.toolbox_demo", __doc__)
    ap.add_argument("--data-dir", default="data/fmnist", help="the demo competition (make demo builds it)")
    ap.add_argument("--runs-dir", default="/tmp/d_runs", help="where the runs go")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    help="the variants trained")
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46], help="seeds of each variant")
    ap.add_argument("--step-sizes", nargs="+", type=int, default=[16, 24, 32], help="sizes step_cost times")
    return ap


def main(argv=None) -> dict:
    a = parser().parse_args(argv)
    load0 = os.getloadavg()
    print(f"{RECIPE} on fold 0 of {a.data_dir}; {cpu_name()}, {os.cpu_count()} cores; load average "
          f"{load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}", flush=True)
    rows = []
    for seed in a.seeds:
        for v in a.variants:
            rows.append(run_variant(v, seed, a.data_dir, a.runs_dir))
            r = rows[-1]
            print(f"{v:9s} seed {seed}: {r['train_s']:6.1f} s ({r['cpu_s']:.0f} CPU s)  "
                  f"OOF {r['oof_acc']:.4f} / {r['oof_log_loss']:.4f}  "
                  f"test {r['test_acc']:.4f} / {r['test_log_loss']:.4f}", flush=True)
    load1 = os.getloadavg()
    cost = step_cost(tuple(a.step_sizes))
    md = table(rows)
    result = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "load_before": load0,
              "load_after": load1, "step_seconds": cost, "rows": rows, "table": md}
    write_json(resolve(a.runs_dir) / "toolbox_demo.json", result)
    print(f"load average after: {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f}; a training step takes "
          + ", ".join(f"{v * 1000:.0f} ms at {k} px" for k, v in cost.items())
          + " (timed alternately)\n\n" + md, flush=True)
    return result


if __name__ == "__main__":
    main()
