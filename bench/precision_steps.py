"""fp32 against bf16 training steps of a recipe's model on this CPU, and what ``precision: auto`` picks.

    python -m bench.precision_steps                                   # params/fmnist/airnet.yaml
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.precision_steps   # as an AVX2-only CPU

One forward + backward + AdamW step of the recipe's model (built as training builds it, random
images at its ``img_size`` and ``batch_size``, 10 classes) in fp32 and under bf16 autocast, timed
in alternating rounds so both see the same load; the median round of each, the ratio bf16 / fp32,
and ``lib.core.precision.choose_precision("cpu", "auto")`` with its reason, beside the CPU model, PyTorch's
CPU capability and the thread count. The two variables above make PyTorch dispatch AVX2 kernels and
oneDNN stop at AVX2, as on a CPU without AVX512-BF16 or AMX. Results: bench/README.md.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lib.core.config import TrainConfig
from lib.core.device import cpu_name
from lib.core.precision import choose_precision, cpu_capability
from lib.model.factory import build_model


def step_ms(cfg: TrainConfig, rounds: int = 5, steps: int = 3) -> dict:
    """Median ms per training step of ``cfg``'s model in fp32 and in bf16 autocast."""
    torch.manual_seed(0)
    model, _ = build_model(cfg.replace(pretrained="none"), 10)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
    x, y = torch.randn(cfg.batch_size, 3, cfg.img_size, cfg.img_size), torch.randint(0, 10, (cfg.batch_size,))

    def run(bf16: bool) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / steps * 1000

    run(False), run(True)  # warm-up (and the whitening stem's first-batch initialisation)
    times = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        times["fp32"].append(run(False))
        times["bf16"].append(run(True))
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.precision_steps", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--params", default="params/fmnist/airnet.yaml", help="the recipe whose model is timed")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is reported")
    a = ap.parse_args(argv)
    cfg = TrainConfig.from_yaml(a.params)
    ms = step_ms(cfg, a.rounds)
    auto = choose_precision("cpu", "auto")
    print(f"cpu: {cpu_name()} | capability {cpu_capability()} | {torch.get_num_threads()} threads | torch "
          f"{torch.__version__}")
    print(f"{cfg.backbone} batch {cfg.batch_size} at {cfg.img_size} px: fp32 {ms['fp32']:.0f} ms/step, "
          f"bf16 {ms['bf16']:.0f} ms/step, bf16/fp32 {ms['bf16'] / ms['fp32']:.2f}")
    print(f"precision auto: {auto.name} ({auto.reason})")


if __name__ == "__main__":
    main()
