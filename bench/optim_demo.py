"""Optimisers, cosine restarts, freeze-then-unfreeze and the class-balanced sampler (issue #31), on the demo.

    python -m lib.ops.demo --source digits --out /tmp/i31o
    python -m bench.optim_demo --data-dir /tmp/i31o/digits --out /tmp/i31o/runs

Fold 0 of the demo, ``params/demo/resnet.yaml`` (test_resnet from scratch, 32 px, 8 epochs, or
``--epochs``; no flips on digits) against the recipe with one lever, in three groups, each with its own
reference row:

- optimisers and schedule: ``opt`` sgd / lion / lamb, each at its usual lr and decay, and
  ``schedule: cosine_restarts`` (cycles of a quarter and three quarters of the run: it ends with one);
- fine-tuning: a body pretrained on the demo's 450 *test* images (their labels from ``solution.csv``),
  a stand-in for hub weights an offline machine cannot download; its head is dropped, so runs from it
  start with a new one. Without and with ``freeze_epochs: 1`` (and with ``layer_decay`` 0.75 too).
  Their test columns are left blank: the body has seen those images;
- the sampler: the training folds made long-tailed (class k keeps about 1 / (k + 1) of its images,
  ``exclude_ids``; the validation fold and the test set stay balanced), ``shuffle`` against
  ``balanced`` and ``sqrt``.

OOF and held-back test scores; wall and CPU seconds (one torch thread). Runs go to ``--out``. Prints a
markdown table.
"""
from __future__ import annotations

import argparse
import shutil

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from bench.levers_demo import train
from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.core.paths import resolve
from lib.train.loop import train_fold


def pretraining_competition(data_dir, out) -> str:
    """A competition folder whose training images are ``data_dir``'s test images, by their held-back labels."""
    src, root = resolve(data_dir), resolve(out) / "pretrain_data"
    if root.exists():
        shutil.rmtree(root)
    sol = pd.read_csv(src / "solution.csv", dtype={"ID": str})
    for r in sol.itertuples():
        (root / "train" / r.label).mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "test" / f"{r.ID}.jpg", root / "train" / r.label / f"{r.ID}.jpg")
    (root / "test").mkdir()
    few = sol.head(10)
    for i in few["ID"]:
        shutil.copy(src / "test" / f"{i}.jpg", root / "test" / f"{i}.jpg")
    pd.DataFrame({"ID": few["ID"], "img_path": [f"./test/{i}.jpg" for i in few["ID"]]}).to_csv(
        root / "test.csv", index=False)
    sub = pd.read_csv(src / "sample_submission.csv", dtype={"ID": str})
    sub[sub["ID"].isin(few["ID"])].to_csv(root / "sample_submission.csv", index=False)
    return str(root)


def headless(weights, path) -> str:
    """``weights`` without the classifier (fc.*): a run from it gets a new head."""
    save_file({k: v for k, v in load_file(weights).items() if not k.startswith("fc.")}, path)
    return str(path)


def long_tail(data_dir, out) -> str:
    """exclude_ids that leave class k (0..9, in the order of the class folders' names) about 1 / (k + 1)
    of its training images (at least 2)."""
    train_dir = resolve(data_dir) / "train"
    drop = []
    for k, d in enumerate(sorted(train_dir.iterdir())):
        ids = [f.stem for f in sorted(d.glob("*.jpg"))]
        drop += ids[: len(ids) - max(2, len(ids) // (k + 1))]
    path = resolve(out) / "long_tail.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": drop}).to_csv(path, index=False)
    return str(path)


def variants(base: TrainConfig, out) -> list[dict]:
    """Every row of the table for one seed (``base.seed``), in order."""
    out = resolve(out) / f"seed{base.seed}"
    rows = [train(base, out, "recipe (AdamW, onecycle)")]
    train_fold(base.replace(data_dir=pretraining_competition(base.data_dir, out), full_data=True,
                            runs_dir=str(out), run_name="pretrain"))
    body = headless(out / "pretrain" / "model.safetensors", out / "pretrained_body.safetensors")
    tuned = [train(base, out, "pretrained body, all layers from the start", pretrained=body),
             train(base, out, "pretrained body, freeze_epochs 1", pretrained=body, freeze_epochs=1),
             train(base, out, "pretrained body, freeze_epochs 1, layer_decay 0.75", pretrained=body,
                   freeze_epochs=1, layer_decay=0.75)]
    rows += [{**r, "test_acc": None, "test_log_loss": None} for r in tuned]
    tail = long_tail(base.data_dir, out)
    n_all, n_out = sum(1 for _ in (resolve(base.data_dir) / "train").rglob("*.jpg")), len(pd.read_csv(tail))
    epochs = round(base.epochs * n_all / (n_all - n_out))  # the recipe's optimizer steps on fewer images
    rows += [train(base, out, f"long-tailed training, sampler {s}", exclude_ids=tail, sampler=s, epochs=epochs)
             for s in ("shuffle", "balanced", "sqrt")]
    q = base.epochs / 4
    rows += [train(base, out, "opt sgd (nesterov), lr 0.1, wd 5e-4", opt="sgd", lr=0.1, weight_decay=5e-4),
             train(base, out, "opt lion, lr 4e-4, wd 0.5", opt="lion", lr=4e-4, weight_decay=0.5),
             train(base, out, "opt lion, lr 1e-3, wd 0.2", opt="lion", lr=1e-3, weight_decay=0.2),
             train(base, out, "opt lamb, lr 4e-3 (the recipe's)", opt="lamb"),
             train(base, out, "opt lamb, lr 1e-2", opt="lamb", lr=1e-2),
             train(base, out, f"cosine_restarts {q:g} x 3 ({q:g} + {3 * q:g} epochs)", schedule="cosine_restarts",
                   restart_epochs=q, restart_mult=3.0)]
    return [{**r, "seed": base.seed} for r in rows]


def markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in table.itertuples(index=False):
        lines.append("| " + " | ".join("" if v is None or v != v else f"{v:.1f}" if k in ("train_s", "cpu_s")
                                       else f"{v:g}" if k == "epochs" else f"{v:.4f}" if isinstance(v, float)
                                       else str(v) for k, v in zip(cols, r)) + " |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.optim_demo", __doc__)
    ap.add_argument("--data-dir", default="data/digits", help="the demo competition (python -m lib.ops.demo)")
    ap.add_argument("--params", default="params/demo/resnet.yaml", help="the recipe each lever is added to")
    ap.add_argument("--out", default="/tmp/optim_demo", help="runs folder of the measured runs")
    ap.add_argument("--epochs", type=int, default=None, help="instead of the recipe's (a multiple of 4)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42], help="seeds of every variant; means over them")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: comparable under other load)")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    base = TrainConfig.from_yaml(resolve(a.params), data_dir=a.data_dir, n_folds=3, fold=0, hflip=False,
                                 progress=False, verbose=False, force=True, num_workers=0)
    base = base.replace(epochs=a.epochs or base.epochs)
    rows = pd.DataFrame([r for seed in a.seeds for r in variants(base.replace(seed=seed), a.out)])
    print(markdown(rows.drop(columns=["epoch_s"])), "\n")
    scores = ["oof_acc", "oof_log_loss", "test_acc", "test_log_loss"]
    mean = rows.groupby("variant", sort=False)[["epochs", "train_s", "cpu_s", *scores]].mean()
    mean["oof_log_loss_sd"] = rows.groupby("variant", sort=False)["oof_log_loss"].std()
    print(f"means over seeds {a.seeds}\n" + markdown(mean.reset_index()))


if __name__ == "__main__":
    main()
