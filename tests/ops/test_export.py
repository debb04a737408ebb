"""lib.ops.export: a test_resnet and a test_convnext run as ONNX files that onnxruntime runs with any
batch size and that agree with PyTorch to 1e-4 on the competition's test images; a blend exports
one file per run and its blend file."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from lib.core.config import TrainConfig
from lib.ops.export import main
from lib.ops.onnx_export import check_onnx, export_blend, export_onnx
from lib.predict.crossfit import fit_blend
from lib.predict.oof import load_test, open_runs
from lib.predict.submission import write_ensemble
from lib.train.loop import train_fold


@pytest.fixture(scope="module")
def data(_digits_source, tmp_path_factory):
    """A copy of the digits demo of its own (the session's source must stay as built)."""
    return shutil.copytree(_digits_source, tmp_path_factory.mktemp("export") / "digits")


@pytest.fixture(scope="module")
def two_runs(data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    for backbone in ("test_resnet", "test_convnext"):
        train_fold(TrainConfig(data_dir=str(data), backbone=backbone, img_size=32, batch_size=32, epochs=1,
                               n_folds=2, fold=0, run_name=f"{backbone}_f0", runs_dir=str(runs), progress=False,
                               verbose=False))
    return runs


@pytest.mark.parametrize("backbone", ["test_resnet", "test_convnext"])
def test_onnx_matches_pytorch_with_a_free_batch_axis(two_runs, backbone, tmp_path):
    run = two_runs / f"{backbone}_f0"
    path = export_onnx(run, tmp_path / "m.onnx")
    meta = json.loads((tmp_path / "m.onnx.json").read_text())
    assert meta["size"] == 32 and len(meta["classes"]) == 10 and len(meta["mean"]) == 3
    assert check_onnx(run, path, n=60) <= 1e-4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 7):
        probs = session.run(None, {"image": np.zeros((b, 3, 32, 32), np.float32)})[0]
        assert probs.shape == (b, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_blend_exports_every_run_and_the_cli_checks(two_runs, data, tmp_path, capsys):
    comp, runs, oofs = open_runs(data, two_runs)
    write_ensemble(fit_blend(oofs, comp.classes), load_test(runs, comp.classes), comp, two_runs,
                   tmp_path / "sub.csv", runs)
    out = export_blend(two_runs, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == [
        "blend.json", "test_convnext_f0.onnx", "test_convnext_f0.onnx.json", "test_resnet_f0.onnx",
        "test_resnet_f0.onnx.json"]
    assert main([str(two_runs / "test_resnet_f0")]) == 0
    assert "max |onnxruntime - PyTorch|" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        export_onnx(tmp_path)
