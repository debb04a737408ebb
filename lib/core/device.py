"""Pick the compute device and a DataLoader worker count that fits the platform."""
from __future__ import annotations

import os
import platform

import torch


def pick_device(device: str | None = None, verbose: bool = True) -> torch.device:
    """``device`` = None/"auto" picks cuda, then mps (Apple Silicon), then cpu, and says which."""
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
        how = "auto"
    else:
        how = "asked"
        kind = torch.device(device).type
        if kind == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={device!r} asked for, but torch {torch.__version__} sees no CUDA GPU; "
                               "use device=None (auto) or 'cpu'")
        if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise RuntimeError(f"device={device!r} asked for, but MPS is not available here; use device=None or 'cpu'")
    dev = torch.device(device)
    if verbose:
        extra = f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""
        print(f"device: {dev}{extra} [{how}]")
    return dev


def default_num_workers(device: torch.device | str, num_workers: int | None = None) -> int:
    """DataLoader workers: 0 on mps (workers die there) and on Windows/macOS spawn, 0 on a CPU-only
    box (the workers would steal the cores the model trains on), else up to 8 or the cores there are."""
    if num_workers is not None and num_workers >= 0:
        return int(num_workers)
    dev = torch.device(device)
    if dev.type == "mps" or platform.system() in ("Darwin", "Windows"):
        return 0
    if dev.type == "cpu":
        return 0
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, n - 1))


def pool_workers(workers: int | None = None) -> int:
    """Processes for a pool over files (scan, image pass, cache build): ``workers``, else all cores up to 8."""
    return int(workers) if workers else min(8, os.cpu_count() or 1)


def cpu_name() -> str:
    """The CPU's model name (e.g. "AMD EPYC"), for env.json and benchmark reports: CPU timings, and
    bf16 results slightly, differ between CPU models of the same core count."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_list(devices: int | list, device: str | None = None) -> list[str]:
    """The devices of a data-parallel run, one per process (``TrainConfig.device_list``): ``devices``
    as a list ("cuda:1", "cpu"...; integers are GPU ids), or a count of GPUs (of CPU processes where
    there is none); a count of 1 is ``device`` (None: "auto")."""
    if isinstance(devices, list):
        return [f"cuda:{d}" if isinstance(d, int) else str(d) for d in devices]
    if devices == 1:
        return [device or "auto"]
    if (device or "cuda").startswith("cuda") and torch.cuda.device_count() >= devices:
        return [f"cuda:{k}" for k in range(devices)]
    if device and device.startswith("cuda"):
        raise ValueError(f"devices {devices}: only {torch.cuda.device_count()} CUDA GPUs here")
    return ["cpu"] * devices
