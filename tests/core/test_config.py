"""lib.core.config: one home for every training default; recipes, the 02_train cell and the dataclass agree;
a bad setting fails before anything is written, naming the valid ones."""
from __future__ import annotations

import ast
import dataclasses

import nbformat
import papermill as pm
import pytest
import timm
import yaml

from lib.core.config import RUNTIME, TrainConfig, defaults, field_names
from lib.core.paths import repo_root

RECIPES = sorted((repo_root() / "params").rglob("*.yaml"))
NOTEBOOK_ONLY = {"find_lr"}


def _parameters_cell() -> dict:
    """name -> default of 02_train's parameters cell (literals only)."""
    nb = nbformat.read(repo_root() / "notebooks" / "02_train.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body
            if isinstance(node, ast.Assign) and not node.targets[0].id.startswith("_")}


def test_notebook_cell_defaults_are_the_dataclass_defaults():
    cell = _parameters_cell()
    assert set(cell) == set(field_names()) | NOTEBOOK_ONLY
    assert {k: v for k, v in cell.items() if k not in NOTEBOOK_ONLY} == defaults()


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(repo_root() / "params")))
def test_every_recipe_is_a_valid_config(path):
    rec = yaml.safe_load(path.read_text())
    assert set(rec) <= set(field_names()), set(rec) - set(field_names())
    cfg = TrainConfig.from_yaml(path)
    assert timm.is_model(cfg.backbone.split(".")[0]), cfg.backbone
    assert len(RECIPES) >= 9


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(backbone="test_resnet", loss="focal", loss_args={"gamma": 2.0}, ema=0.99,
                      model_kwargs={"a": [1, 2]})
    cfg.to_yaml(tmp_path / "params.yaml")
    assert TrainConfig.from_yaml(tmp_path / "params.yaml") == cfg
    assert TrainConfig.from_yaml(tmp_path / "params.yaml", lr=0.5).lr == 0.5          # overrides win


def test_unknown_and_bad_settings_name_what_is_valid(tmp_path):
    with pytest.raises(ValueError,
                       match=r"unknown training setting 'agu' \(did you mean 'aug'\?\); valid ones: data_dir"):
        TrainConfig.from_dict({"agu": "light"})
    with pytest.raises(ValueError) as e:
        TrainConfig(aug="strong", schedule="cosine", monitor="auc", fold=5, n_folds=5, ema=1.5, pool="gem2",
                    best_epoch="best", ema_epochs=0)
    msg = str(e.value)
    for part in ("aug 'strong': choose one of", "schedule 'cosine'", "monitor 'auc'", "fold 5 not in 0..4",
                 "ema 1.5", "pool 'gem2'", "best_epoch 'best': choose one of ['last', 'monitor']",
                 "ema_epochs 0.0: a horizon in epochs > 0"):
        assert part in msg
    with pytest.raises(ValueError, match="ema 0.999 and ema_epochs 1.0 are two ways to set one EMA"):
        TrainConfig(ema=0.999, ema_epochs=1)
    with pytest.raises(ValueError, match="vflip 'yes': must be bool"):
        TrainConfig(vflip="yes")
    with pytest.raises(ValueError, match="epochs 'ten': must be int"):
        TrainConfig(epochs="ten")
    with pytest.raises(ValueError, match="cache 'no': must be bool"):
        TrainConfig(cache="no")
    with pytest.raises(ValueError, match="loss_args \\['alpha'\\] do not fit loss 'ce'"):
        TrainConfig(loss="ce", loss_args={"alpha": 1})
    with pytest.raises(ValueError) as e:
        TrainConfig(opt="adam", sampler="weighted", restart_mult=0.5)
    for part in ("opt 'adam': choose one of ['adamw', 'adopt', 'lamb', 'lion', 'momentum'",
                 "sampler 'weighted': choose one of ['balanced', 'shuffle', 'sqrt']", "restart_mult 0.5"):
        assert part in str(e.value)
    with pytest.raises(ValueError, match=r"opt_args \['momentum'\] do not fit opt 'lion', which takes \['betas'"):
        TrainConfig(opt="lion", opt_args={"momentum": 0.9})
    with pytest.raises(ValueError, match="freeze_epochs 1 would hold a body that was never trained"):
        TrainConfig(freeze_epochs=1)
    with pytest.raises(ValueError, match="freeze_epochs 6: 0 \\(off\\) to 5; the frozen epochs start the run's 6"):
        TrainConfig(freeze_epochs=6, epochs=6, pretrained="hub")
    with pytest.raises(ValueError, match="swa_epochs 4: averages 2..3 epochs \\(epochs after the 1 freeze_epochs"):
        TrainConfig(freeze_epochs=1, epochs=5, pretrained="hub", swa_epochs=4, swa_lr=1e-4)
    p = tmp_path / "r.yaml"
    p.write_text("lr: 1e-4\nepochs: 3\nscan_args: {labels_csv: train.csv, label: x}\n")  # YAML 1.1 reads 1e-4 as text
    with pytest.raises(ValueError, match=r"(?s)r.yaml: .*scan_args \['label'\]: valid keys"):
        TrainConfig.from_yaml(p)
    p.write_text("lr: 1e-4\nepochs: 3\n")
    assert TrainConfig.from_yaml(p).lr == 1e-4 and TrainConfig(lr=1).lr == 1.0
    missing = TrainConfig(pretrained="nope.safetensors").missing_files()
    assert "pretrained 'nope.safetensors': no such weights file" in missing[0]


def test_from_notebook_catches_misspelt_parameters():
    ns = {"In": [], "np": dataclasses}                  # what the kernel had before the parameters cell
    ns["_names_before"] = set(ns)
    ns.update(defaults(), find_lr=False, lr_max=0.1)    # the cell, then papermill's injected "-p lr_max 0.1"
    with pytest.raises(ValueError, match=r"unknown parameter 'lr_max' \(did you mean 'lr'\?\)"):
        TrainConfig.from_notebook(dict(ns), notebook_only={"find_lr"})
    del ns["lr_max"]
    ns.update(epochs=3, TrainConfig=TrainConfig, run=object())  # objects a later cell made are not settings
    assert TrainConfig.from_notebook(ns, notebook_only={"find_lr"}).epochs == 3
    ns["summary"] = {"complete": True}   # a rerun of the cell without its parameters cell checks no names
    assert TrainConfig.from_notebook(ns, notebook_only={"find_lr"}).epochs == 3


def test_differences_ignore_where_and_how_a_run_runs():
    a = TrainConfig(backbone="test_resnet", fold=1)
    b = a.replace(runs_dir="elsewhere", num_workers=4, progress=False, cache=False, run_name="test_resnet_f1")
    assert a.differences(b) == {} and RUNTIME >= {"runs_dir", "cache", "device"}
    assert a.differences({**b.to_dict(), "img_size": 64, "old_key": 1}) == {"img_size": (32, 64), "old_key": (None, 1)}


def test_papermill_settings_reach_the_run_and_a_typo_writes_nothing(digits_comp, tmp_path):
    out, runs = tmp_path / "out.ipynb", tmp_path / "runs"
    common = dict(data_dir=str(digits_comp), backbone="test_resnet", img_size=16, batch_size=32, epochs=1,
                  n_folds=2, runs_dir=str(runs), progress=False, precision="fp32")  # 16 px: AMX bf16 (precision.py)
    with pytest.raises(pm.PapermillExecutionError, match="unknown parameter 'lr_max'"):
        pm.execute_notebook(str(repo_root() / "notebooks" / "02_train.ipynb"), str(out), cwd=str(repo_root()),
                            parameters={**common, "lr_max": 0.1}, kernel_name="python3", progress_bar=False)
    assert not runs.exists() and not (digits_comp / "folds.csv").exists()
    pm.execute_notebook(str(repo_root() / "notebooks" / "02_train.ipynb"), str(out), cwd=str(repo_root()),
                        parameters={**common, "cache": False}, kernel_name="python3", progress_bar=False)
    saved = TrainConfig.from_yaml(runs / "test_resnet_f0" / "params.yaml")
    assert saved == TrainConfig(**common, cache=False, run_name="test_resnet_f0")
    assert not (digits_comp / "cache").exists()                     # cache False: decoded, never cached


def test_runs_recorded_before_the_new_settings_read_back_as_they_trained(tmp_path):
    """An older run's params.yaml has ``ema:`` and no best_epoch, ema_epochs or flips: it loads, and the
    missing settings say what it did (best epoch kept; its preset's flips of then)."""
    from lib.core.rundir import load_config, recorded_config
    asked = TrainConfig.from_yaml(repo_root() / "params" / "doc_convnext_tiny.yaml", data_dir="data/docs",
                                  run_name="doc_convnext_tiny_f0")
    new = {"best_epoch", "ema_epochs", "hflip", "vflip", "rot90", "opt", "opt_args", "freeze_epochs", "sampler",
           "restart_epochs", "restart_mult"}
    then = {k: v for k, v in asked.to_dict().items() if k not in new} | {"ema": 0.999}  # as 02_train wrote it
    for name, aug, flips in (("doc", "doc_noise", (True, True, True)), ("photo", "medium", (True, False, False))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "params.yaml").write_text(yaml.safe_dump({**then, "aug": aug}))
        cfg = load_config(tmp_path / name)
        assert (cfg.ema, cfg.ema_epochs, cfg.best_epoch) == (0.999, None, "monitor")
        assert (cfg.hflip, cfg.vflip, cfg.rot90) == flips
    # the doc recipe asked again: the flips match what doc_noise did then; the kept epoch and the EMA do not
    assert asked.differences(recorded_config(tmp_path / "doc")) == {
        "best_epoch": ("last", "monitor"), "ema": (None, 0.999), "ema_epochs": (2.0, None)}
    assert asked.replace(best_epoch="monitor", ema=0.999, ema_epochs=None).differences(
        recorded_config(tmp_path / "doc")) == {}
