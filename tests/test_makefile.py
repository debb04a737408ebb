"""The Makefile's grid: the fold default of the notebooks and of lib.ops.grid (5), not the demo's 3, and any other
grid option through ARGS (``-y`` overrides included), run by real make and the real grid command."""
from __future__ import annotations

import os
import subprocess
import sys

import yaml

from lib.core.paths import repo_root


def _venv(tmp_path):
    """A VENV for make whose python is this interpreter and whose install and kernel are up to date (nothing built)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    (venv / ".foldbook-installed").touch()
    spec = venv / "share" / "jupyter" / "kernels" / "foldbook" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.touch()
    return venv


def _make(*args):
    env = {**os.environ, "MAKEFLAGS": ""}
    return subprocess.run(["make", "--no-print-directory", "-C", str(repo_root()), *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_make_grid_passes_args_and_folds_as_the_notebooks_count_them(digits_comp, tmp_path):
    venv = _venv(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"backbone": "test_resnet", "img_size": 24, "epochs": 1}))
    dry = _make("-n", "grid", f"VENV={venv}", f"PARAMS={recipe}").stdout
    assert f"-m lib.ops.grid --params {recipe} --folds 0-4 " in dry and "n_folds" not in dry   # the recipe's: 5
    assert "-p n_folds 3" in _make("-n", "grid", f"VENV={venv}", f"PARAMS={recipe}", "N_FOLDS=3").stdout
    out = _make("grid", f"VENV={venv}", f"PARAMS={recipe}", f"DATA={digits_comp}", f"RUNS={tmp_path / 'runs'}",
                "ARGS=-y \"{loss_args: {gamma: 2.0}, stages: [[16, 1], [24, 1]]}\" --jobs 2")
    # the grid read -y's dict and list and refused the recipe before running anything: ARGS reached it
    assert out.returncode != 0 and "grid: nothing was run" in out.stderr, out.stdout + out.stderr
    assert "loss_args ['gamma'] do not fit loss 'ce'" in out.stderr, out.stderr
    assert "the stages add up to 2 epochs" in out.stderr and not (tmp_path / "runs").exists(), out.stderr
    none = _make("grid", f"VENV={venv}")
    assert none.returncode != 0 and "make grid: give PARAMS=" in none.stdout
