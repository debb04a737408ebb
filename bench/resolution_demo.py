"""Resolution settings (issue #31, item 1) against the same recipe without them, on the digits demo and on
a document-like variant of it: ``presize``, ``resize: pad`` and predicting larger than trained.

    python -m lib.ops.demo --source digits --out /tmp/i31r          # 1,347 train, 450 test images
    python -m bench.resolution_demo --data-dir /tmp/i31r/digits --out /tmp/i31r/bench

``params/demo/resnet.yaml`` (timm ``test_resnet`` from scratch, 32 px, 8 epochs, ``hflip: false`` as
``make demo`` trains digits) on fold 0 of 3, seeds 42-44, one torch thread. Variants: the recipe
(``squash``, presize 1); ``presize: 1.25`` (a 40 px cache, crops scaled down to 32); ``resize: pad``;
and the recipe's own runs re-predicted at 36 and 40 px (``PredictSpec.size``: 04's and 05's
``predict_size``). ``--params``, ``--variants`` and ``--predict-sizes`` pick another recipe, fewer variants and
other sizes, e.g. ``--params params/fmnist/airnet.yaml --variants recipe --predict-sizes 32 36`` (airnet_tiny,
28 px: its last feature map is 3 x 3 at 28 and 32 px, 4 x 4 at 36; test_resnet's is 1 x 1 at 32, 2 x 2 above).
The document-like variant (``<data-dir>_doc``, built here from the demo) puts each
digit on a portrait page 1.6x as tall as wide at a random height, and turns half of the pages (train and
test alike, seeded) a quarter turn, so that pages come in both orientations; its recipe adds ``rot90:
true``. Squashing stretches an upright page one way and a turned one the other, which ``pad`` does not.
Scores: OOF (fold 0) and test (the held-back ``solution.csv``, read only here), accuracy and log loss,
means over the seeds; ``train s`` is ``train_fold``'s median wall time (image cache included). Prints a
markdown table and writes ``<out>/resolution_demo.json``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.core.io import write_json
from lib.core.metrics import accuracy, log_loss
from lib.core.paths import resolve
from lib.predict.inference import PredictSpec, predict_fold
from lib.train.loop import train_fold

RECIPE = "params/demo/resnet.yaml"
TRAINED = {"recipe": {}, "presize 1.25": {"presize": 1.25}, "resize pad": {"resize": "pad"}}
PREDICTED = (36, 40)  # the recipe's runs re-predicted at these sizes


def document_variant(src: Path, dest: Path, seed: int = 0) -> Path:
    """``src`` (the digits demo) with every image on a portrait page (1.6 x as tall, the digit at a random
    height), half of them turned 90 degrees either way; CSVs copied as they are. Built once."""
    if (dest / "solution.csv").exists():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("cache", "eda", "folds.*", "scan*", "classes.json"))
    rng = np.random.default_rng(seed)
    for f in sorted(dest.rglob("*.jpg")):
        a = np.asarray(Image.open(f).convert("RGB"))
        h, w = a.shape[:2]
        page = np.zeros((round(1.6 * h), w, 3), np.uint8)
        top = int(rng.integers(0, page.shape[0] - h + 1))
        page[top:top + h] = a
        if rng.random() < 0.5:
            page = np.rot90(page, k=int(rng.choice([1, 3])))
        Image.fromarray(np.ascontiguousarray(page)).save(f, quality=92)
    return dest


def test_scores(data_dir: Path, probs: pd.DataFrame) -> tuple[float, float]:
    """(accuracy, log loss) of id + classes against the demo's held-back labels."""
    sol = pd.read_csv(data_dir / "solution.csv", dtype={"ID": str})
    p = probs.set_index("id").loc[sol["ID"]].to_numpy(np.float64)
    return accuracy(sol["target"].to_numpy(), p), log_loss(sol["target"].to_numpy(), p)


def oof_scores(oof: pd.DataFrame) -> tuple[float, float]:
    p, y = oof.drop(columns=["id", "fold", "target"]).to_numpy(np.float64), oof["target"].to_numpy()
    return accuracy(y, p), log_loss(y, p)


def rows_for(data_dir: Path, out: Path, seed: int, extra: dict, recipe: str = RECIPE, variants=tuple(TRAINED),
             sizes=PREDICTED) -> list[dict]:
    base = TrainConfig.from_yaml(resolve(recipe), data_dir=str(data_dir), n_folds=3, fold=0, seed=seed, hflip=False,
                                 runs_dir=str(out / data_dir.name), progress=False, verbose=False, force=True, **extra)
    rows = []
    for name in variants:
        changes = TRAINED[name]
        cfg = base.replace(run_name=f"{name.replace(' ', '_')}_s{seed}", **changes)
        start = time.time()
        train_fold(cfg)
        secs = time.time() - start
        run = out / data_dir.name / cfg.run_name
        oof, test = pd.read_csv(run / "oof.csv", dtype={"id": str}), pd.read_csv(run / "test.csv", dtype={"id": str})
        rows.append({"data": data_dir.name, "variant": name, "seed": seed, "train_s": secs,
                     **dict(zip(("oof_acc", "oof_log_loss"), oof_scores(oof))),
                     **dict(zip(("test_acc", "test_log_loss"), test_scores(data_dir, test)))})
        if name == "recipe":
            for size in sizes:
                spec = PredictSpec(size=size)
                rows.append({"data": data_dir.name, "variant": f"recipe, predict_size {size}", "seed": seed,
                             "train_s": 0.0, **dict(zip(("oof_acc", "oof_log_loss"),
                                                         oof_scores(predict_fold(run, spec, "oof")))),
                             **dict(zip(("test_acc", "test_log_loss"),
                                        test_scores(data_dir, predict_fold(run, spec, "test"))))})
    return rows


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.resolution_demo", __doc__)
    ap.add_argument("--data-dir", default="/tmp/i31r/digits", help="the digits demo (lib.ops.demo --source digits)")
    ap.add_argument("--out", default="/tmp/i31r/bench", help="runs folder of the measured runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="seeds of every variant")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: comparable under other load)")
    ap.add_argument("--params", default=RECIPE, help="the recipe (e.g. params/fmnist/airnet.yaml, 28 px)")
    ap.add_argument("--variants", nargs="+", default=list(TRAINED), choices=list(TRAINED), help="recipes trained")
    ap.add_argument("--predict-sizes", type=int, nargs="+", default=list(PREDICTED),
                    help="sizes the recipe's runs are re-predicted at")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    data, out = resolve(a.data_dir), resolve(a.out)
    doc = document_variant(data, data.with_name(data.name + "_doc"))
    rows = []
    for seed in a.seeds:
        for d, extra in ((data, {}), (doc, {"rot90": True})):
            rows += rows_for(d, out, seed, extra, a.params, a.variants, a.predict_sizes)
    df = pd.DataFrame(rows)
    write_json(out / "resolution_demo.json", {"rows": rows, "load": os.getloadavg()})
    table = df.groupby(["data", "variant"], sort=False).agg(
        train_s=("train_s", "median"), oof_acc=("oof_acc", "mean"), oof_log_loss=("oof_log_loss", "mean"),
        test_acc=("test_acc", "mean"), test_log_loss=("test_log_loss", "mean"),
        test_acc_sd=("test_acc", "std"), test_log_loss_sd=("test_log_loss", "std")).reset_index()
    print(f"seeds {a.seeds}, load average {os.getloadavg()}")
    print("| " + " | ".join(table.columns) + " |\n|" + " --- |" * len(table.columns))
    for r in table.itertuples(index=False):
        print("| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
