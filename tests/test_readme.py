"""Every command the README shows runs as written.

Each ``make`` line is dry-run (``make -n``: the target exists and its variables parse), each papermill
line names a notebook and parameters that notebook has, each ``python -m`` module answers ``--help``,
and the path for a competition of one's own (``make quick``) runs for real on the digits competition,
offline: params/quick.yaml with ImageNet weights from a local ``.safetensors`` (as in an offline
kernel; the test saves random ones), shrunk to 32 px and one epoch.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import papermill as pm
import pytest
import timm

from lib.core.paths import repo_root
from lib.model.backbones import save_weights

ROOT = repo_root()
VENV = Path(sys.prefix)  # the environment running the tests, wherever it lives (make's VENV)


def readme_commands(text: str | None = None) -> list[str]:
    """The shell commands in the README's fenced blocks: continuation lines joined, comments dropped."""
    text = text if text is not None else (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```(?:\w*)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if re.match(r"(make|\S*papermill|\S*python\S*|[A-Z_]+=\S+ )", line):
                out.append(line)
    return out


def test_readme_shows_commands():
    cmds = readme_commands()
    assert any(c.startswith("make quick") for c in cmds) and any(c.startswith("make demo") for c in cmds)
    assert any("papermill" in c for c in cmds)


def test_readme_parser_joins_continuations_and_drops_comments():
    text = "x\n```\nmake a B=1   # why\n.venv/bin/papermill n.ipynb o.ipynb \\\n    -p x 1\n```\n"
    assert readme_commands(text) == ["make a B=1", ".venv/bin/papermill n.ipynb o.ipynb      -p x 1"]


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if c.startswith("make")])
def test_readme_make_commands_dry_run(cmd):
    args = shlex.split(cmd)[1:]
    r = subprocess.run(["make", "-n", *args, f"VENV={VENV}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"`{cmd}` fails in the Makefile: {r.stderr[-1000:]}"


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if "papermill" in c])
def test_readme_papermill_commands_name_real_parameters(cmd):
    args = shlex.split(cmd)
    notebook = ROOT / next(a for a in args if a.endswith(".ipynb"))
    assert notebook.exists(), f"`{cmd}`: no notebook {notebook}"
    names = set(pm.inspect_notebook(str(notebook)))
    given = [args[i + 1] for i, a in enumerate(args) if a == "-p"]
    assert set(given) <= names, f"`{cmd}`: {sorted(set(given) - names)} are not parameters of {notebook.name}"
    for i, a in enumerate(args):
        if a == "-f":
            assert (ROOT / args[i + 1]).exists(), f"`{cmd}`: no parameters file {args[i + 1]}"


def test_every_readme_command_is_checked_and_modules_answer_help():
    """A README command of a new kind needs a check here; ``python -m`` modules must answer ``--help``."""
    for cmd in readme_commands():
        module = re.search(r"python\S* -m (\S+)", cmd)
        if module and "papermill" not in cmd:
            r = subprocess.run([sys.executable, "-m", module.group(1), "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 0 and "usage" in r.stdout, f"`{cmd}`: {r.stderr[-1000:]}"
        else:
            assert cmd.startswith("make") or "papermill" in cmd, f"`{cmd}`: no check for this kind of command"


@pytest.mark.slow
def test_make_quick_ends_in_a_valid_submission(digits_comp, tmp_path):
    """The README's path for one's own competition, as a user runs it (make, papermill, the grid)."""
    weights = save_weights(timm.create_model("resnet18", pretrained=False), tmp_path / "resnet18.safetensors")
    runs = tmp_path / "runs"
    args = f"-p pretrained {weights} -p img_size 32 -p epochs 1 -p hflip False"
    r = subprocess.run(["make", "quick", f"DATA={digits_comp}", f"RUNS={runs}", f"VENV={VENV}", f"ARGS={args}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "make quick:" in r.stdout and "cross-validation" in r.stdout
    assert sorted(p.name for p in runs.glob("quick_f*") if p.is_dir()) == ["quick_f0", "quick_f1", "quick_f2"]
    sub = pd.read_csv(runs / "submission.csv", dtype={"ID": str})
    sample = pd.read_csv(digits_comp / "sample_submission.csv", dtype={"ID": str})
    assert list(sub.columns) == list(sample.columns) and list(sub["ID"]) == list(sample["ID"])
    probs = sub[sample.columns[1:]].to_numpy()
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-6)
    assert nbformat.read(runs / "04_ensemble_tta.ipynb", as_version=4).cells  # the executed notebook is kept


def test_readme_stays_short():
    """The README is the way in (at most 7 KB); details live in docs/."""
    size = (ROOT / "README.md").stat().st_size
    assert size <= 7000, f"README.md is {size} bytes: move details to docs/ (limit 7000)"
