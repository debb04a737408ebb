"""Which dtype a run computes in, chosen for the hardware it runs on, and why.

    choice = choose_precision("cpu", "auto")   # Precision(name="fp32", dtype=None, reason="auto: ...")
    choice.dtype                               # torch.bfloat16 / torch.float16 / None (fp32)

``auto`` (the default of every recipe) picks, on CUDA, bf16 where the GPU computes it natively
(compute capability 8.0 and up), else fp16 with loss scaling; on the CPU, bf16 only where the CPU
runs it natively (AVX512-BF16 or AMX, with PyTorch dispatching AVX512 kernels) *and* a one-time
micro-probe times a bf16 training step faster than an fp32 one; else fp32. On a CPU without native
bf16 (AVX2 only, or ``ATEN_CPU_CAPABILITY=avx2``), autocast emulates bf16 at ~14x the cost of fp32.

The probe (``probe_step_ms``: a small conv net, forward + backward + AdamW, fp32 and bf16 timed
alternately, median of rounds) is cached per machine in ``<repo>/.cache/precision.json``, keyed by
CPU model, PyTorch's CPU capability, torch version and thread count. A recipe that asks for bf16 on
a CPU that emulates it still gets bf16, with a warning that gives the measured slowdown.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lib.core.choices import PRECISIONS
from lib.core.device import cpu_name
from lib.core.io import write_json
from lib.core.paths import repo_root

BF16_MIN_GAIN = 1.1  # auto takes bf16 on the CPU only when the probe's fp32 step is this much slower


@dataclass(frozen=True)
class Precision:
    """The choice for one device: ``name`` fp32 | bf16 | fp16, ``dtype`` for autocast (None: fp32),
    ``reason`` one line for the run's log, ``step_ms`` the probe's {fp32, bf16} times when measured."""
    name: str
    dtype: torch.dtype | None
    reason: str
    step_ms: dict | None = None

    def record(self) -> dict:
        """What env.json keeps of the choice."""
        return {"precision": self.name, "precision_reason": self.reason, "precision_probe_ms": self.step_ms}


def cpu_capability() -> str:
    """PyTorch's CPU kernel level here: AVX512, AVX2, DEFAULT, SVE256... (``ATEN_CPU_CAPABILITY`` lowers it)."""
    return torch.backends.cpu.get_cpu_capability()


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware for PyTorch: AVX512-BF16 or AMX on x86 with AVX512
    kernels dispatched; BF16 instructions on 64-bit Arm."""
    cap = cpu_capability()
    if platform.machine().lower() in ("aarch64", "arm64"):
        return cap.startswith("SVE") and _cpuinfo_has("bf16")
    return cap.startswith("AVX512") and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def _cpuinfo_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(flag in line.split() for line in f if line.lower().startswith(("flags", "features")))
    except OSError:
        return False


def choose_precision(device: torch.device | str, precision: str = "auto", verbose: bool = False) -> Precision:
    """The dtype a run on ``device`` trains and predicts in for the recipe's ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {list(PRECISIONS)}")
    dev = torch.device(device)
    if precision == "fp32" or dev.type not in ("cuda", "cpu"):
        return Precision("fp32", None, "asked" if precision == "fp32" else f"{dev.type} trains in fp32")
    if dev.type == "cuda":
        major = torch.cuda.get_device_capability(dev)[0]
        if precision == "bf16" or major >= 8:
            return Precision("bf16", torch.bfloat16, "asked" if precision == "bf16" else
                             f"auto: the GPU computes bf16 natively (compute capability {major}.x)")
        return Precision("fp16", torch.float16, f"auto: compute capability {major}.x emulates bf16; fp16 "
                         "with loss scaling")
    cap = cpu_capability()
    native = cpu_bf16_native()
    if precision == "bf16":
        if not native:
            ms = probe_step_ms(verbose=verbose)
            warnings.warn(f"precision bf16 on a CPU without native bf16 ({cpu_name()}, capability {cap}): a bf16 "
                          f"training step measured {ms['bf16'] / ms['fp32']:.1f}x slower than fp32 here "
                          f"({ms['bf16']:.0f} vs {ms['fp32']:.0f} ms); set precision auto or fp32", stacklevel=2)
            return Precision("bf16", torch.bfloat16, f"asked; emulated on capability {cap}", ms)
        return Precision("bf16", torch.bfloat16, f"asked; native on capability {cap}")
    if not native:
        return Precision("fp32", None, f"auto: CPU capability {cap} has no native bf16")
    ms = probe_step_ms(verbose=verbose)
    gain = ms["fp32"] / ms["bf16"]
    if gain >= BF16_MIN_GAIN:
        return Precision("bf16", torch.bfloat16, f"auto: native bf16 ({cap}), probe step {gain:.1f}x faster "
                         "than fp32", ms)
    return Precision("fp32", None, f"auto: native bf16 ({cap}) but the probe step is only {gain:.2f}x "
                     "as fast as fp32", ms)


def amp_dtype(dev: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of ``choose_precision`` (None: fp32)."""
    return choose_precision(dev, precision).dtype


# ---------------------------------------------------------------- the probe


def _probe_key() -> str:
    return f"{cpu_name()} | {cpu_capability()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def probe_step_ms(refresh: bool = False, verbose: bool = False) -> dict:
    """{fp32, bf16}: ms per training step of a small conv net (batch 64, 32 px), cached per machine."""
    path = repo_root() / ".cache" / "precision.json"
    key = _probe_key()
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if not refresh and isinstance(cache.get(key), dict) and {"fp32", "bf16"} <= set(cache[key]):
        return cache[key]
    if verbose:
        print(f"precision: timing fp32 vs bf16 once on this CPU ({key})", flush=True)
    cache[key] = time_steps()
    write_json(path, cache)
    return cache[key]


def time_steps(batch: int = 64, size: int = 32, rounds: int = 3, steps: int = 2, model: nn.Module | None = None,
               num_classes: int = 10) -> dict:
    """{fp32, bf16}: median ms per forward + backward + AdamW step of ``model`` (default: a small conv
    net) on random ``batch`` x 3 x ``size`` x ``size`` images, in fp32 and in bf16 autocast, timed in
    alternating rounds so both see the same load (the first step of each is a warm-up)."""
    torch.manual_seed(0)
    if model is None:
        model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GELU(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.GELU(), nn.MaxPool2d(2),
                              nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.GELU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)  # multi-tensor, as training uses
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, num_classes, (batch,))

    def run(bf16: bool) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / steps * 1000

    run(False), run(True)  # warm-up: oneDNN builds its kernels on first use
    times = {"fp32": [], "bf16": []}
    for _ in range(rounds):
        times["fp32"].append(run(False))
        times["bf16"].append(run(True))
    return {k: round(statistics.median(v), 2) for k, v in times.items()}
