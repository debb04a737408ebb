"""lib.core.config: one home for every training default; recipes, the 02_train cell and the dataclass agree;
a bad setting fails before anything is written, naming the valid ones."""
from __future__ import annotations

import ast
import dataclasses
import typing

import nbformat
import papermill as pm
import pytest
import timm
import yaml

from lib.core.config import RUNTIME, TrainConfig, defaults, field_names
from lib.core.paths import repo_root
from lib.core.rundir import recipe_changes

RECIPES = sorted((repo_root() / "params").rglob("*.yaml"))
NOTEBOOK_ONLY = {"find_lr"}


def _parameters_cell() -> dict:
    """name -> (annotation, default) of 02_train's parameters cell (``name: type = literal``)."""
    nb = nbformat.read(repo_root() / "notebooks" / "02_train.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    body = ast.parse(cell.source).body
    assert all(isinstance(node, ast.AnnAssign) for node in body), "every parameter as `name: type = value  # help`"
    return {node.target.id: (ast.unparse(node.annotation), ast.literal_eval(node.value)) for node in body}


def test_notebook_cell_defaults_and_types_are_the_dataclass_ones():
    cell = _parameters_cell()
    assert set(cell) == set(field_names()) | NOTEBOOK_ONLY
    assert {k: v for k, (_, v) in cell.items() if k not in NOTEBOOK_ONLY} == defaults()
    hints = typing.get_type_hints(TrainConfig)
    wrong = {k: (t, str(hints[k])) for k, (t, _) in cell.items() if k in hints and eval(t, vars(typing)) != hints[k]}
    assert not wrong, f"02_train's parameter types differ from TrainConfig's: {wrong}"


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


def test_a_path_setting_is_compared_by_the_file_it_names(tmp_path):
    """data/cars recorded, /abs/repo/data/cars asked (absolute paths, as a Ray cluster needs): one recipe,
    so the grid neither proposes --force nor deletes the finished run."""
    rel = TrainConfig(data_dir="data/cars", exclude_ids="data/cars/noisy.csv", pretrained="hub")
    run = tmp_path / "cars_f0"
    run.mkdir()
    rel.to_yaml(run / "params.yaml")
    (run / "state.pt").write_bytes(b"")                       # trained there: recipe_changes compares
    root = repo_root()
    same = rel.replace(data_dir=str(root / "data" / "cars"), exclude_ids=str(root / "data/./x/../cars/noisy.csv"))
    assert same.differences(rel) == {} and recipe_changes(run, same) == {}
    other = rel.replace(data_dir=str(root / "data" / "dogs"), pretrained=str(root / "hub"))
    assert recipe_changes(run, other) == {"data_dir": (str(root / "data" / "dogs"), "data/cars"),
                                          "pretrained": (str(root / "hub"), "hub")}   # hub is a word, not a path


@pytest.mark.slow
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


def test_credentials_in_url_settings_are_never_recorded(tmp_path):
    """params.yaml, the recipe's repr and the checks' messages hold ``***`` for the password of
    ``tracker_uri``/``sync_to``; the recipe itself keeps the full URL to use it."""
    cfg = TrainConfig(tracker_uri="http://alice:s3cret@mlflow.internal:5000", sync_to="nosuch://bob:hunter2@b/runs")
    path = cfg.to_yaml(tmp_path / "params.yaml")
    recorded = yaml.safe_load(path.read_text())
    assert recorded["tracker_uri"] == "http://***@mlflow.internal:5000" and recorded["sync_to"] == "nosuch://***@b/runs"
    assert cfg.to_record() == recorded and cfg.tracker_uri == "http://alice:s3cret@mlflow.internal:5000"
    shown = repr(cfg) + " ".join(cfg.missing_files())
    assert "sync_to 'nosuch://***@b/runs': fsspec knows no protocol" in shown
    assert "s3cret" not in shown and "hunter2" not in shown and "s3cret" not in path.read_text()


def test_a_notebook_gets_the_full_url_from_the_environment_not_from_its_parameters(monkeypatch):
    """papermill writes parameters into the executed notebook: the grid passes the redacted URL as the
    parameter and the full one in $FOLDBOOK_TRACKER_URI; from_notebook puts it back when they match."""
    def notebook(**params):
        ns = {"_names_before": set()}
        ns.update(defaults(), find_lr=False, **params)
        return ns
    full, shown = "http://alice:s3cret@mlflow.internal:5000", "http://***@mlflow.internal:5000"
    monkeypatch.delenv("FOLDBOOK_TRACKER_URI", raising=False)
    with pytest.raises(ValueError, match=r"tracker_uri 'http://\*\*\*@mlflow.internal:5000' is a recorded URL .*"
                                         r"\$FOLDBOOK_TRACKER_URI is unset\); set \$FOLDBOOK_TRACKER_URI"):
        TrainConfig.from_notebook(notebook(tracker_uri=shown), NOTEBOOK_ONLY)
    monkeypatch.setenv("FOLDBOOK_TRACKER_URI", full)
    assert TrainConfig.from_notebook(notebook(tracker_uri=shown), NOTEBOOK_ONLY).tracker_uri == full
    with pytest.raises(ValueError, match=r"holds another URL \('http://\*\*\*@other:5000'\)"):
        TrainConfig(tracker_uri=shown).with_credentials(environ={"FOLDBOOK_TRACKER_URI": "http://alice:s3cret@other:5000"})
    assert TrainConfig(sync_to="s3://b/runs").with_credentials(environ={}).sync_to == "s3://b/runs"  # nothing hidden
    # given whole by hand (papermill -p): used, and the user is told the notebook keeps it and what to do instead
    with pytest.warns(UserWarning, match=r"tracker_uri holds credentials: the run records it as "
                                         r"'http://\*\*\*@mlflow.internal:5000'.*FOLDBOOK_TRACKER_URI.*~/.netrc") as w:
        assert TrainConfig.from_notebook(notebook(tracker_uri=full), NOTEBOOK_ONLY).tracker_uri == full
    assert "s3cret" not in str(w[0].message)
