"""GPU training throughput of the kit: images per second and GPU utilisation.

    python -m bench.gpu_train [--backbone convnext_tiny] [--size 224] [--batch 128] [--n-train 12000]

Builds a photo competition (JPEGs of 640x480 to 1280x960 from the sample photos that scikit-learn
and scikit-image ship; see eda_speed.py), then trains fold 0 with ``lib.train.loop`` (AMP in bf16,
channels_last, AdamW, `light` augmentation, DataLoader workers as the kit picks them) twice: from
the pre-resized cache and decoding JPEGs on the fly. GPU utilisation is sampled through NVML every
50 ms during the training phases after the first epoch. The baseline, timed in the same run, is the
same model, optimizer and batch on one batch kept on the GPU (no data loading at all): the ceiling.
The last line prints kit/ceiling and the GPU-busy percentage with the cache. With ``--devices N``
(N > 1 GPUs) it then trains the same fold data-parallel on 1 and on N GPUs (``lib.train.distributed``) and
prints images/s of each, from the epochs after the first, and the scaling efficiency
rate_N / (N x rate_1).
"""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import torch
from fastai.callback.core import Callback

from bench.eda_speed import build
from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.data.competition import open_competition
from lib.train.loop import fit, setup_run, train_fold


class PhaseTimer(Callback):
    """Wall time and NVML utilisation samples of each training phase."""
    order = 100

    def __init__(self):
        import pynvml
        pynvml.nvmlInit()
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        self.phases = []

    def _sample(self):
        while not self.stop.is_set():
            self.util.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            time.sleep(0.05)

    def before_train(self):
        self.util, self.stop = [], threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        torch.cuda.synchronize()
        self.t0 = time.perf_counter()
        self.thread.start()

    def after_train(self):
        torch.cuda.synchronize()
        dt = time.perf_counter() - self.t0
        self.stop.set(), self.thread.join()
        self.phases.append({"seconds": dt, "images": self.n_iter * self.dls.train.bs,
                            "util": float(np.mean(self.util))})


def kit_rate(root, a, cache: bool, runs_dir: str, epochs: int) -> dict:
    run = setup_run(TrainConfig(data_dir=str(root), backbone=a.backbone, fold=0, n_folds=5, img_size=a.size,
                                batch_size=a.batch, epochs=epochs, lr=1e-3, aug="light", cache=cache,
                                runs_dir=runs_dir, run_name=f"gpu_{'cache' if cache else 'decode'}", progress=False,
                                verbose=False, force=True, num_workers=a.workers))
    timer = PhaseTimer()
    run.learn.add_cb(timer)
    fit(run)
    steady = timer.phases[1:]  # the first epoch pays cuDNN autotuning and worker start-up
    imgs, secs = sum(p["images"] for p in steady), sum(p["seconds"] for p in steady)
    return {"img_s": imgs / secs, "util": float(np.mean([p["util"] for p in steady])),
            "workers": run.learn.dls.train.num_workers}


def ceiling_rate(a, steps: int = 60) -> float:
    """Same model, AdamW, bf16 autocast and channels_last on one batch resident on the GPU."""
    import timm
    model = timm.create_model(a.backbone, num_classes=100).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    x = torch.randn(a.batch, 3, a.size, a.size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (a.batch,), device="cuda")
    for i in range(steps + 10):
        if i == 10:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    return steps * a.batch / (time.perf_counter() - t0)


def ddp_rate(root, a, devices: int, runs_dir: str, epochs: int) -> float:
    """Training images/s of fold 0 on ``devices`` GPUs, from the run's own epoch times (after the first)."""
    m = train_fold(TrainConfig(data_dir=str(root), backbone=a.backbone, fold=0, n_folds=5, img_size=a.size,
                               batch_size=a.batch * devices, epochs=epochs, lr=1e-3, aug="light", runs_dir=runs_dir,
                               run_name=f"gpu_ddp{devices}", progress=False, verbose=False, force=True,
                               num_workers=a.workers, devices=devices))
    n = len(open_competition(root).train) * 4 // 5  # the 4 training folds
    return n / float(np.median([e["seconds"] for e in m["epochs"][1:]]))


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.gpu_train", __doc__)
    ap.add_argument("--backbone", default="convnext_tiny", help="timm model name")
    ap.add_argument("--size", type=int, default=224, help="training image size, pixels (square)")
    ap.add_argument("--batch", type=int, default=128, help="images per step (per GPU)")
    ap.add_argument("--n-train", type=int, default=12_000, help="train photos of the built competition")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the cached run (the first is not timed)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (None: the kit's choice)")
    ap.add_argument("--watchdog", type=float, default=None,
                    help="dump every thread's stack and exit after this many seconds")
    ap.add_argument("--out", default="data/bench_gpu", help="where the photo competition is built")
    ap.add_argument("--runs-dir", default="runs/bench_gpu", help="where its runs go")
    ap.add_argument("--devices", type=int, default=1, help="also measure data-parallel scaling on this many GPUs")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
    assert torch.cuda.is_available(), "this benchmark needs a CUDA GPU"
    if a.watchdog:
        import faulthandler
        faulthandler.dump_traceback_later(a.watchdog, exit=True)
    t0 = time.perf_counter()
    root = build(a.out, a.n_train, 500, 100)
    print(f"competition: {root} ({a.n_train} train photos, built in {time.perf_counter() - t0:.0f} s)", flush=True)
    t0 = time.perf_counter()
    cached = kit_rate(root, a, True, a.runs_dir, a.epochs)
    print(f"kit, pre-resized cache: {cached['img_s']:.0f} img/s, GPU busy {cached['util']:.0f}% "
          f"({cached['workers']} workers; cache built and run in {time.perf_counter() - t0:.0f} s)", flush=True)
    decode = kit_rate(root, a, False, a.runs_dir, 2)
    print(f"kit, decoding JPEGs:    {decode['img_s']:.0f} img/s, GPU busy {decode['util']:.0f}% "
          f"({decode['workers']} workers)", flush=True)
    ceiling = ceiling_rate(a)
    print(f"ceiling (one batch resident on the GPU): {ceiling:.0f} img/s")
    print(f"{torch.cuda.get_device_name(0)}, {a.backbone} {a.size}px batch {a.batch} bf16 channels_last: "
          f"kit {cached['img_s']:.0f} img/s = {cached['img_s'] / ceiling:.2f} of ceiling, "
          f"GPU busy {cached['util']:.0f}% (cache)")
    if a.devices > 1:
        one, many = (ddp_rate(root, a, n, a.runs_dir, max(3, a.epochs)) for n in (1, a.devices))
        print(f"data-parallel, {a.batch} img per GPU per step: 1 GPU {one:.0f} img/s, "
              f"{a.devices} GPUs {many:.0f} img/s, scaling efficiency {many / (a.devices * one):.2f}")


if __name__ == "__main__":
    main()
