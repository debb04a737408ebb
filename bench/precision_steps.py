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

import torch

from lib.core.cli import command_parser
from lib.core.config import TrainConfig
from lib.core.device import cpu_name
from lib.core.precision import choose_precision, cpu_capability, time_steps
from lib.model.factory import build_model


def step_ms(cfg: TrainConfig, rounds: int = 5, steps: int = 3) -> dict:
    """Median ms per training step of ``cfg``'s model in fp32 and in bf16 autocast (``lib.core.precision``'s
    probe, run on the recipe's model, batch size and image size)."""
    torch.manual_seed(0)
    model, _ = build_model(cfg.replace(pretrained="none"), 10)
    return time_steps(cfg.batch_size, cfg.img_size, rounds, steps, model=model)


def parser() -> argparse.ArgumentParser:
    ap = command_parser("bench.precision_steps", __doc__)
    ap.add_argument("--params", default="params/fmnist/airnet.yaml", help="the recipe whose model is timed")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is reported")
    return ap


def main(argv=None) -> None:
    a = parser().parse_args(argv)
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
