"""A backbone built for small images at their native size against the recipe's upsampled ResNet, on
Fashion-MNIST fold 0, both trained by the kit's own path.

    python -m bench.small_backbone                        # fold 0, full data, the recipes' 5 epochs
    python -m bench.small_backbone --max-samples 12000 --epochs 2     # a quick look (both cut alike)

What it runs: each recipe of ``--params`` (default ``params/fmnist/resnet64.yaml``, timm ``test_resnet``
widened at 64 px, and ``params/fmnist/airnet.yaml``, ``lib.model.smallnet``'s ``airnet_tiny`` at 28 px) on
fold 0 of ``--data-dir`` (default ``data/fmnist_full``: build it with ``python -m lib.ops.demo --source
fashion-mnist --name fmnist_full --out data``), through ``lib.train.loop`` (``setup_run``, ``fit``,
``write_predictions``) with ``force`` in a scratch runs folder (``--runs-dir``, default
``/tmp/small_bench_runs``), back to back in one process with the same number of torch threads. The
folds are those of ``make bench-fmnist`` (5 folds keeping 01_eda's duplicate groups together): when the
data folder has no ``folds.csv`` yet, this script makes it the way 01_eda and training would.
``--epochs`` and ``--max-samples`` (train and valid images, a random subset) change every recipe alike.

Per model it prints: training wall minutes (``fit``: the epochs and their per-epoch validation; cache
building and the final predictions are not counted) and the process's CPU minutes in it; OOF accuracy
and log loss of the weights the run keeps (the recipe's ``best_epoch``); accuracy and log loss per
minute of training; forward GFLOPs per image (``torch.utils.flop_counter.FlopCounterMode``:
convolutions and matrix products, not norms or activations); training TFLOPs = 3 x forward x images
seen; the test accuracy and log loss of that one fold model (``solution.csv``, scoring only). Then the
ratio of every model's figures to the first one's. The machine may be shared: wall times then move
with the load, so an interleaved check (training steps of every model in alternating rounds on random
batches, model compute only) gives a second, load-robust ratio of throughput; on a shared machine
``--threads 1`` is the steadier setting (two threads stall whenever another process takes a core).
Writes ``<runs-dir>/small_backbone.json``. Results: ``params/fmnist/README.md``.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.core.device import cpu_name
from lib.core.io import write_json
from lib.core.paths import relative, resolve
from lib.core.precision import amp_dtype
from lib.model.factory import build_model
from lib.ops.demo_data import score_submission
from lib.train.loop import fit, setup_run, write_predictions

DEFAULT_PARAMS = ["params/fmnist/resnet64.yaml", "params/fmnist/airnet.yaml"]


def prepare_folds(data_dir: str, n_folds: int = 5) -> None:
    """folds.csv as `make bench-fmnist` makes it: 01_eda's image pass writes the duplicate groups, then
    the folds keep each group together. Nothing happens when the folds exist."""
    from lib.data.competition import open_competition
    from lib.data.folds import make_folds
    from lib.insight import duplicates, image_stats
    comp = open_competition(data_dir)
    if (comp.work / "folds.csv").exists():
        return
    print(f"making {n_folds} folds for {data_dir} (image stats and duplicate groups, as 01_eda does)", flush=True)
    duplicates.find_duplicates(comp, image_stats.image_stats(comp))
    make_folds(comp, n_folds=n_folds)


def forward_flops(cfg: TrainConfig, num_classes: int) -> int:
    """Forward FLOPs of one image at the recipe's size (the model built as training builds it)."""
    model, _ = build_model(cfg.replace(pretrained="none"), num_classes)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, cfg.img_size, cfg.img_size))
    return counter.get_total_flops()


def interleaved_throughput(cfgs: list[TrainConfig], num_classes: int, rounds: int = 3, steps: int = 8) -> list[float]:
    """Training images per second of each recipe's model (forward, backward, AdamW at its batch size and
    precision, random images), measured in alternating rounds so every model sees the same load; the
    median round of each."""
    setups = []
    for cfg in cfgs:
        torch.manual_seed(0)
        model, _ = build_model(cfg.replace(pretrained="none"), num_classes)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True)
        x = torch.randn(cfg.batch_size, 3, cfg.img_size, cfg.img_size)
        y = torch.randint(0, num_classes, (cfg.batch_size,))
        setups.append((cfg, model, opt, x, y))

    def step(cfg, model, opt, x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp_dtype("cpu", cfg.precision) is not None):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for s in setups:  # warm-up (and the whitening stem's first-batch initialisation)
        step(*s)
    rates = [[] for _ in setups]
    for _ in range(rounds):
        for k, s in enumerate(setups):
            start = time.perf_counter()
            for _ in range(steps):
                step(*s)
            rates[k].append(steps * s[0].batch_size / (time.perf_counter() - start))
    return [statistics.median(r) for r in rates]


def train_one(cfg: TrainConfig, data_dir: Path) -> dict:
    run = setup_run(cfg)  # builds the image caches: not timed
    wall, cpu = time.perf_counter(), time.process_time()
    fit(run)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = write_predictions(run)
    test = score_submission(data_dir, run.dir / "test.csv")
    epochs = len(metrics["epochs"])
    seen = len(run.data.train) // cfg.batch_size * cfg.batch_size * epochs  # drop_last
    return {"run": cfg.name, "backbone": cfg.backbone, "model_kwargs": cfg.model_kwargs, "img_size": cfg.img_size,
            "epochs": epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "pool": cfg.pool,
            "train_images": len(run.data.train), "valid_images": len(run.data.valid), "images_seen": seen,
            "params_m": sum(p.numel() for p in run.learn.model.parameters()) / 1e6,
            "train_minutes": wall / 60, "cpu_minutes": cpu / 60, "accuracy": metrics["accuracy"],
            "log_loss": metrics["log_loss"], "best_epoch": metrics["best_epoch"],
            "test_accuracy": test["test_accuracy"], "test_log_loss": test["test_log_loss"]}


def table(rows: list[dict]) -> str:
    head = ("| model | input | epochs | train min (wall) | CPU min | OOF acc | OOF log loss | acc / min | "
            "log loss / min | fwd GFLOPs / img | train TFLOPs | img/s (interleaved) | test acc | test log loss |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        name = f"{Path(r['params']).stem}: {r['backbone']}" + (f" {r['model_kwargs']}" if r["model_kwargs"] else "")
        lines.append(f"| {name} | {r['img_size']} px | {r['epochs']} | {r['train_minutes']:.2f} | "
                     f"{r['cpu_minutes']:.2f} | {r['accuracy']:.4f} | {r['log_loss']:.4f} | "
                     f"{r['accuracy'] / r['train_minutes']:.4f} | {r['log_loss'] / r['train_minutes']:.4f} | "
                     f"{r['forward_gflops']:.4f} | {r['train_tflops']:.1f} | {r['interleaved_img_s']:.0f} | "
                     f"{r['test_accuracy']:.4f} | {r['test_log_loss']:.4f} |")
    base = rows[0]
    for r in rows[1:]:
        ratio = lambda k, r=r: f"{r[k] / base[k]:.2f}"  # noqa: E731
        diff = lambda k, r=r: f"{r[k] - base[k]:+.4f}"  # noqa: E731
        lines.append(f"| {Path(r['params']).stem} / {Path(base['params']).stem} (ratio; difference for scores) | | | "
                     f"{ratio('train_minutes')} | {ratio('cpu_minutes')} | {diff('accuracy')} | {diff('log_loss')} "
                     f"| | | {ratio('forward_gflops')} | {ratio('train_tflops')} | {ratio('interleaved_img_s')} | "
                     f"{diff('test_accuracy')} | {diff('test_log_loss')} |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.small_backbone", __doc__)
    ap.add_argument("--params", nargs="+", default=DEFAULT_PARAMS, help="recipes; the first is the reference")
    ap.add_argument("--data-dir", default="data/fmnist_full", help="the Fashion-MNIST competition (lib.ops.demo)")
    ap.add_argument("--runs-dir", default="/tmp/small_bench_runs", help="where the runs go")
    ap.add_argument("--fold", type=int, default=0, help="the validation fold trained")
    ap.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (None: theirs)")
    ap.add_argument("--max-samples", type=int, default=None, help="random subset of train and valid images")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for every model")
    return ap


def main(argv=None) -> dict:
    a = parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    started = time.time()
    data_dir = resolve(a.data_dir)
    if not (data_dir / "demo.json").exists():
        raise SystemExit(f"{a.data_dir} is missing: python -m lib.ops.demo --source fashion-mnist "
                         f"--name {data_dir.name} --out {relative(data_dir.parent)}")
    prepare_folds(str(data_dir))
    overrides = {k: v for k, v in (("epochs", a.epochs), ("max_samples", a.max_samples)) if v is not None}
    cfgs = [TrainConfig.from_yaml(resolve(p), data_dir=str(data_dir), n_folds=5, fold=a.fold, runs_dir=a.runs_dir,
                                  run_name=f"{Path(p).stem}_f{a.fold}", force=True, progress=False, verbose=True,
                                  num_workers=0, **overrides) for p in a.params]
    print(f"{len(cfgs)} recipes on fold {a.fold} of {a.data_dir}, {a.threads} torch threads, {cpu_name()}; "
          f"overrides for all: {overrides or 'none'}", flush=True)
    rows = []
    for p, cfg in zip(a.params, cfgs):
        print(f"--- {p}", flush=True)
        rows.append({"params": p, **train_one(cfg, data_dir)})
    print("--- interleaved throughput check", flush=True)
    rates = interleaved_throughput(cfgs, 10)
    for r, cfg, rate in zip(rows, cfgs, rates):
        r["forward_gflops"] = forward_flops(cfg, 10) / 1e9
        r["train_tflops"] = 3 * r["forward_gflops"] * r["images_seen"] / 1e3
        r["interleaved_img_s"] = rate
    md = table(rows)
    result = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "threads": a.threads,
              "command": " ".join(["python -m bench.small_backbone", *(sys.argv[1:] if argv is None else argv)]),
              "overrides": overrides, "minutes": round((time.time() - started) / 60, 1), "rows": rows, "table": md}
    write_json(resolve(a.runs_dir) / "small_backbone.json", result)
    print(f"\nfold {a.fold}, {rows[0]['train_images']} train / {rows[0]['valid_images']} valid images, "
          f"{a.threads} torch threads, {cpu_name()}, whole script {result['minutes']} min\n")
    print(md, flush=True)
    return result


if __name__ == "__main__":
    main()
