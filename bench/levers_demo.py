"""Recipe levers of issue #19 item 5, measured on the demo competition at equal training time.

    python -m bench.levers_demo --data-dir data/fmnist --params params/demo/resnet.yaml --out /tmp/levers

Fold 0 of the demo (``make demo`` builds it), the recipe as it is against the recipe with one lever:
the learned-policy augmentation presets (RandAugment, TrivialAugment, AutoAugment; slower per epoch,
so they get the epochs that fit the recipe's training time, from a timed one-epoch run), layer-wise
lr decay (0.75), and ``compile`` (fold 0 with an empty Inductor cache, then fold 1 with the cache fold
0 left). OOF and held-back test scores (``solution.csv``, read here only to score). Wall and CPU
seconds (one torch thread by default, so other load on the machine changes the wall time, not the
CPU time); equal time means the epochs whose training-loop seconds (metrics.json) match the
recipe's. Runs go to ``--out``, never to runs/. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import torch

from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.core.metrics import accuracy, log_loss
from lib.core.paths import resolve
from lib.train.loop import train_fold


def test_scores(data_dir, run_dir) -> tuple[float, float]:
    """(accuracy, log loss) of a run's test.csv against the demo's held-back labels."""
    sol = pd.read_csv(resolve(data_dir) / "solution.csv", dtype={"ID": str})
    test = pd.read_csv(run_dir / "test.csv", dtype={"id": str}).set_index("id").loc[sol["ID"]]
    p, y = test.to_numpy(np.float64), sol["target"].to_numpy()
    return accuracy(y, p), log_loss(y, p)


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (Inductor's compile workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def train(base: TrainConfig, out, name: str, **changes) -> dict:
    """Train fold ``changes.get('fold', base.fold)`` of ``base`` with ``changes``; its row of the table."""
    slug = "".join(c if c.isalnum() else "_" for c in name)
    cfg = base.replace(runs_dir=str(out), run_name=slug, **changes)
    start, cpu = time.time(), _cpu()
    m = train_fold(cfg)
    acc, ll = test_scores(cfg.data_dir, resolve(out) / slug)
    return {"variant": name, "epochs": cfg.epochs, "train_s": round(time.time() - start, 1),
            "cpu_s": round(_cpu() - cpu, 1), "epoch_s": float(np.mean([h["seconds"] for h in m["epochs"]])),
            "oof_acc": m["accuracy"], "oof_log_loss": m["log_loss"], "test_acc": acc, "test_log_loss": ll}


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.levers_demo", __doc__)
    ap.add_argument("--data-dir", default="data/fmnist", help="the demo competition (make demo builds it)")
    ap.add_argument("--params", default="params/demo/resnet.yaml", help="the recipe the levers are added to")
    ap.add_argument("--out", default="/tmp/levers", help="runs folder of the measured runs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: comparable under other load)")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    base = TrainConfig.from_yaml(resolve(a.params), data_dir=a.data_dir, n_folds=3, fold=0, progress=False,
                                 verbose=False, force=True)
    rows = [train(base, a.out, "recipe")]
    per_epoch = rows[0]["epoch_s"]  # the training loop's own seconds per epoch (one thread), without set-up
    for aug in ("randaugment", "trivialaugment", "autoaugment"):
        probe = train(base, a.out, f"probe {aug}", aug=aug, epochs=1)
        epochs = max(1, round(base.epochs * per_epoch / probe["epoch_s"]))
        rows.append(train(base, a.out, f"aug {aug}", aug=aug, epochs=epochs))
    rows.append(train(base, a.out, "layer_decay 0.75", layer_decay=0.75))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(resolve(a.out) / "inductor")  # empty: fold 0 pays the compile
    rows.append(train(base, a.out, "compile, fold 0 (cold cache)", compile=True))
    rows.append(train(base, a.out, "compile, fold 1 (warm cache)", compile=True, fold=1))
    rows.append(train(base, a.out, "eager, fold 1", fold=1))
    table = pd.DataFrame([r for r in rows if not r["variant"].startswith("probe")])
    cols = list(table.columns)
    print("| " + " | ".join(cols) + " |\n|" + " --- |" * len(cols))
    for r in table.itertuples(index=False):
        print("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) and k != "train_s" else str(v)
                                for k, v in zip(cols, r)) + " |")


if __name__ == "__main__":
    main()
