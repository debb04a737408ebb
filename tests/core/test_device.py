"""lib.core.device: device choice and worker counts."""
from __future__ import annotations

import torch

from lib.core.device import default_num_workers, pick_device


def test_pick_device(capsys):
    dev = pick_device(None)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert dev.type == expected and "device:" in capsys.readouterr().out
    assert pick_device("cpu", verbose=False).type == "cpu"


def test_workers():
    assert default_num_workers("mps") == 0                            # workers die on Apple Silicon
    assert default_num_workers("cpu") == 0
    assert default_num_workers("cuda", 3) == 3                        # an explicit count wins


def test_asking_for_a_missing_device_says_so():
    import pytest
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            pick_device("cuda")


def test_cpu_name_is_the_model_name_from_proc_cpuinfo():
    from pathlib import Path

    from lib.core.device import cpu_name
    name = cpu_name()
    assert isinstance(name, str) and name and "\n" not in name
    info = Path("/proc/cpuinfo")
    if info.exists():
        models = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("model name")]
        if models:
            assert name == models[0]


def test_predictions_run_in_the_training_dtype():
    from torch.utils.data import DataLoader, TensorDataset

    from lib.model.forward import predict_loader
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return torch.nn.functional.linear(x.flatten(1), torch.ones(3, x[0].numel()))

    loader = DataLoader(TensorDataset(torch.rand(4, 3, 2, 2)), batch_size=2)
    probs = predict_loader(Probe(), loader, ["identity"], "cpu", dtype=torch.bfloat16, progress=False)
    assert seen and all(on and dt is torch.bfloat16 for on, dt in seen) and probs.shape == (4, 3)
    seen.clear()
    predict_loader(Probe(), loader, ["identity"], "cpu", progress=False)
    assert not any(on for on, _ in seen)
