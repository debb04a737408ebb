"""lib.core.precision: the dtype a run computes in, chosen for the hardware, and the cached probe."""
from __future__ import annotations

import json

import pytest
import torch

from lib.core import precision as P


def no_probe(*a, **k):
    raise AssertionError("the probe ran, but this choice needs no timing")


def test_auto_on_a_cpu_without_native_bf16_is_fp32_without_a_probe(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(P, "probe_step_ms", no_probe)
    choice = P.choose_precision("cpu", "auto")
    assert choice.name == "fp32" and choice.dtype is None and "AVX2" in choice.reason
    assert P.amp_dtype("cpu") is None and not P.cpu_bf16_native()


def test_auto_on_a_native_bf16_cpu_takes_bf16_only_when_the_probe_says_it_is_faster(monkeypatch):
    monkeypatch.setattr(P, "cpu_bf16_native", lambda: True)
    monkeypatch.setattr(P, "probe_step_ms", lambda **k: {"fp32": 100.0, "bf16": 50.0})
    assert P.choose_precision("cpu", "auto").dtype is torch.bfloat16
    monkeypatch.setattr(P, "probe_step_ms", lambda **k: {"fp32": 100.0, "bf16": 95.0})
    choice = P.choose_precision("cpu", "auto")
    assert choice.dtype is None and "only 1.05x" in choice.reason and choice.step_ms["bf16"] == 95.0


def test_bf16_asked_on_an_emulating_cpu_warns_with_the_measured_slowdown(monkeypatch):
    monkeypatch.setattr(P, "cpu_bf16_native", lambda: False)
    monkeypatch.setattr(P, "probe_step_ms", lambda **k: {"fp32": 204.0, "bf16": 2813.0})
    with pytest.warns(UserWarning, match=r"13\.8x slower than fp32.*set precision auto or fp32"):
        choice = P.choose_precision("cpu", "bf16")
    assert choice.dtype is torch.bfloat16 and "emulated" in choice.reason


def test_fp32_and_other_devices_and_cuda_rules(monkeypatch):
    monkeypatch.setattr(P, "probe_step_ms", no_probe)
    assert P.amp_dtype("cpu", "fp32") is None and P.amp_dtype("mps", "bf16") is None
    for capability, want in (((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16),
                             ((9, 0), torch.bfloat16)):     # T4, V100 emulate bf16; A100, H100 have it
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None, c=capability: c)
        assert P.amp_dtype("cuda", "auto") is want, capability
        assert P.amp_dtype("cuda", "bf16") is torch.bfloat16
    with pytest.raises(ValueError, match="precision 'fp8'"):
        P.choose_precision("cpu", "fp8")


def test_the_probe_is_timed_once_per_machine_and_cached(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(P, "repo_root", lambda: tmp_path)
    monkeypatch.setattr(P, "time_steps", lambda: calls.append(1) or {"fp32": 10.0, "bf16": 5.0})
    assert P.probe_step_ms() == {"fp32": 10.0, "bf16": 5.0} and P.probe_step_ms()["bf16"] == 5.0
    assert len(calls) == 1
    cache = json.loads((tmp_path / ".cache" / "precision.json").read_text())
    assert list(cache) == [P._probe_key()] and "threads" in P._probe_key()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 977)  # another machine shape: timed again
    P.probe_step_ms()
    assert len(calls) == 2


def test_time_steps_measures_both_dtypes():
    ms = P.time_steps(batch=4, size=8, rounds=1, steps=1)
    assert set(ms) == {"fp32", "bf16"} and all(v > 0 for v in ms.values())
