"""End to end: the four real notebooks through papermill on a tiny demo competition.

The competition ships its labels as a table the kit reads only when told (``labels.csv`` with a
``species`` column); 01_eda is told once (``scan_args``), and 02_train (grid: 2 backbones x 2 folds,
1 epoch), 03_oof_analysis, 04_ensemble_tta and the summary open it with no repeated argument. The
submission is checked against sample_submission.csv and every notebook must hold plots.
"""
from __future__ import annotations

import ast
import json
import re

import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest
import yaml
from click.testing import CliRunner
from papermill.cli import papermill as papermill_cli

from lib.core.paths import repo_root
from lib.ops import summary
from lib.ops.jobs import KERNEL
from lib.ops.runner import run_grid
from lib.predict.lb_log import submission_cv

NB = repo_root() / "notebooks"


def _execute(name, out_dir, **params):
    out = out_dir / f"{name}.ipynb"
    pm.execute_notebook(str(NB / f"{name}.ipynb"), str(out), parameters=params, cwd=str(repo_root()),
                        kernel_name=KERNEL, progress_bar=False)
    return nbformat.read(out, as_version=4)


def _pngs(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def _text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_every_notebook_declares_the_project_kernel():
    """JupyterLab (``make lab``), papermill and another Jupyter with ``make kernel`` open them on ``foldbook``."""
    for path in sorted(NB.glob("*.ipynb")):
        spec = nbformat.read(path, as_version=4).metadata.get("kernelspec", {})
        assert spec.get("name") == KERNEL, (
            f"{path.name} declares kernel {spec.get('name')!r}: set its metadata.kernelspec to "
            f'{{"display_name": "foldbook (.venv)", "language": "python", "name": "{KERNEL}"}}')


def test_notebooks_are_valid_and_committed_without_outputs():
    """nbformat 4.5 wants an id on every cell (papermill warns, later versions refuse); outputs live in runs/."""
    for path in sorted(NB.glob("*.ipynb")):
        raw = json.loads(path.read_text(encoding="utf-8"))  # nbformat.read would add missing ids silently
        assert all("id" in c for c in raw["cells"]), f"{path.name}: a cell has no id (nbformat.validator.normalize)"
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert not any(c.get("outputs") or c.get("execution_count") for c in nb.cells if c.cell_type == "code"), \
            f"{path.name} holds outputs: clear them before committing (jupyter nbconvert --clear-output)"


def test_papermill_lists_every_parameter_with_its_type_and_help():
    """``papermill <nb> --help-notebook`` reads as documentation: every name the parameters cell assigns (and no
    helper such as 02's ``_names_before``), each with a type and its comment; papermill skips a line holding two
    ``=`` (so a comment must not hold one) and shows "Unknown type" for an unannotated one."""
    for path in sorted(NB.glob("*.ipynb")):
        cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
        assigned = [node.target.id for node in ast.parse(cell.source).body if isinstance(node, ast.AnnAssign)]
        assert len(assigned) == len(ast.parse(cell.source).body), f"{path.name}: a parameter without its type"
        res = CliRunner().invoke(papermill_cli, ["--help-notebook", str(path)])   # papermill's own command
        assert res.exit_code == 0, res.output
        out = res.output
        listed = _help_notebook(out)
        assert list(listed) == assigned, f"{path.name}: papermill lists {list(listed)}, the cell assigns {assigned}"
        untyped = [k for k, (kind, _) in listed.items() if kind == "Unknown type"]
        assert not untyped and "Unknown type" not in out, f"{path.name}: no type for {untyped}"
        assert not [k for k, (_, text) in listed.items() if not text], f"{path.name}: a parameter has no help"


def _help_notebook(out: str) -> dict:
    """name -> (type, help) from ``papermill --help-notebook``'s lines: ``  name: type (default v)`` then the help,
    on the same line after padding or on the next, indented by 34."""
    params, last = {}, None
    for line in out.splitlines():
        m = re.match(r"^  (\w+): (.+?) \(default .*?\)(.*)$", line)
        if m:
            last = m[1]
            params[last] = [m[2], m[3].strip()]
        elif last and line.startswith(" " * 34) and not params[last][1]:
            params[last][1] = line.strip()
    return {k: tuple(v) for k, v in params.items()}


def _as_labels_table(root):
    """Class folders -> one flat train/ folder and labels.csv (image_path, species)."""
    rows = []
    for d in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        for f in sorted(d.iterdir()):
            f.rename(root / "train" / f"{d.name}_{f.name}")
            rows.append({"image_path": f"train/{d.name}_{f.name}", "species": d.name})
        d.rmdir()
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)


@pytest.mark.slow
def test_four_notebooks_end_to_end(digits_comp, tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    data = str(digits_comp)
    _as_labels_table(digits_comp)
    eda = _execute("01_eda", runs, data_dir=data, n_folds=2,
                   scan_args={"labels_csv": "labels.csv", "label_col": "species"})
    assert _pngs(eda) >= 3

    recipes = []
    for name, backbone in (("tres", "test_resnet"), ("tconv", "test_convnext")):
        p = tmp_path / f"{name}.yaml"
        p.write_text(yaml.safe_dump({"backbone": backbone, "img_size": 32, "batch_size": 32, "epochs": 1,
                                     "lr": 0.003, "n_folds": 2, "data_dir": data}))
        recipes.append(p)
    res = run_grid(recipes, [0, 1], runs_dir=str(runs), jobs=2)
    assert not res["failed"], res["failed"]
    train_nb = nbformat.read(runs / "tres_f0.ipynb", as_version=4)
    assert _pngs(train_nb) >= 2                                       # augmented batch + curves

    ana = _execute("03_oof_analysis", runs, data_dir=data, runs_dir=str(runs), n_folds=2)
    assert _pngs(ana) >= 5                                            # ... and every run's learning curves
    assert (runs / "analysis" / "learning_curves.png").exists()
    assert "open this notebook in JupyterLab" in _text(ana)          # headless: no widget, static galleries
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for c in ana.cells for o in c.get("outputs", []))
    assert (runs / "leaderboard.csv").exists()

    assert len(list((runs / "browse").glob("oof_mistakes_t*/manifest.csv"))) == 1   # the focus model's mistakes

    sub_path, team_path = runs / "submission.csv", runs / "team_submission.csv"
    ens = _execute("04_ensemble_tta", runs, data_dir=data, runs_dir=str(runs), submission=str(sub_path),
                   tta=["identity", "hflip"], external=[{"path": str(runs / "tres_f1"), "name": "mate"}],
                   team_submission=str(team_path), compare=[str(sub_path), str(runs / "tconv_f0")])
    assert _pngs(ens) >= 2                                            # reliability + the diff gallery
    team = pd.read_csv(team_path, dtype={"ID": str})                  # a teammate's run folder joined the blend
    assert list(team.columns) == list(pd.read_csv(sub_path, nrows=1).columns) and len(team) == 60
    assert (runs / "ensemble" / "diff_pairs.csv").exists()
    assert (runs / "browse" / "test_predicted" / "manifest.csv").exists()
    expected = json.loads((runs / "ensemble" / "expected_score.json").read_text())
    assert submission_cv(sub_path, runs)["cv"] == expected["expected"]  # what `lib.ops.team lb add` finds
    sub = pd.read_csv(sub_path, dtype={"ID": str})
    sample = pd.read_csv(digits_comp / "sample_submission.csv", dtype={"ID": str})
    assert list(sub.columns) == list(sample.columns)
    assert list(sub["ID"]) == list(sample["ID"])
    probs = sub[sample.columns[1:]].to_numpy()
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-6)
    # the blend is fitted on OOF: it is no worse there than the best single model
    report = pd.read_csv(runs / "ensemble" / "blend_report.csv")
    singles = report[~report["model"].str.contains("blend")]
    fitted = report[report["model"].str.contains("fitted")]
    assert fitted["log_loss"].min() <= singles["log_loss"].min() + 1e-9
    capsys.readouterr()
    summary.main(["--data-dir", data, "--runs-dir", str(runs), "--score"])
    printed = capsys.readouterr().out
    assert "tres" in printed and "tconv" in printed and "test log loss" in printed
