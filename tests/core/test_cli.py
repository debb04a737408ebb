"""lib.core.cli: every command line of lib and bench is named as it is run (``python -m ...``), gives each option a
help text and shows its default; lib's answer ``--help`` without importing torch, pandas or the rest of their work."""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import subprocess
import sys

import pytest

from lib.core.paths import repo_root

HEAVY = {"torch", "pandas", "numpy", "timm", "fastai", "sklearn", "albumentations", "cv2", "nbformat", "fsspec"}


def _command_lines(folder: str) -> list[str]:
    """The modules under ``folder`` that run a ``main()`` as a command line."""
    out = []
    for p in sorted((repo_root() / folder).rglob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body):
            out.append(".".join(p.relative_to(repo_root()).with_suffix("").parts))
    return out


LIB, BENCH = _command_lines("lib"), _command_lines("bench")


def _parsers(ap: argparse.ArgumentParser):
    yield ap
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_the_command_lines_are_found():
    assert {"lib.ops.grid", "lib.ops.export", "lib.ops.summary", "lib.ops.backup", "lib.ops.bundle", "lib.ops.demo",
            "lib.ops.teacher"} <= set(LIB) and len(BENCH) >= 13


@pytest.mark.parametrize("module", LIB + BENCH)
def test_each_option_has_a_help_text_and_its_default_is_shown(module):
    ap = importlib.import_module(module).parser()
    assert ap.prog == f"python -m {module}" and ap.description
    for p in _parsers(ap):
        undocumented = [a.dest for a in p._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
        assert not undocumented, f"{p.prog}: options without a help text: {undocumented}"
        text = p.format_help()
        shown = [a.dest for a in p._actions if a.help and a.default not in (None, argparse.SUPPRESS, [])
                 and a.nargs != 0 and not a.required and (a.option_strings or a.nargs in ("?", "*"))
                 and f"(default: {a.default})" not in " ".join(text.split())]
        assert not shown, f"{p.prog}: defaults not shown in --help: {shown}"


PROBE = """
import json, runpy, sys
sys.argv = [{module!r}, "--help"]
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print("\\n" + json.dumps({{"code": code, "loaded": sorted({{m.split(".")[0] for m in sys.modules}})}}))
"""


@pytest.mark.parametrize("module", LIB)
def test_lib_command_lines_answer_help_without_loading_their_work(module):
    """``python -m lib.ops.export --help`` took ~9 s (torch, timm, fastai) before it printed a line."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         cwd=repo_root(), check=True)
    text, res = out.stdout.rsplit("\n", 2)[0], json.loads(out.stdout.strip().splitlines()[-1])
    assert res["code"] == 0 and text.startswith(f"usage: python -m {module}"), out.stdout + out.stderr
    assert not out.stderr, out.stderr                                  # no warning of an import either
    assert not HEAVY & set(res["loaded"]), f"{module} --help imports {sorted(HEAVY & set(res['loaded']))}"


def test_help_shows_the_examples_of_the_docstring():
    text = importlib.import_module("lib.ops.grid").parser().format_help()
    assert "examples:\n    python -m lib.ops.grid --params" in text and "(default: 0-4)" in text


def test_export_has_no_flag_that_does_nothing(capsys):
    """``--onnx`` was accepted and ignored (ONNX is the one format): it is refused now, not silently taken."""
    with pytest.raises(SystemExit):
        importlib.import_module("lib.ops.export").parser().parse_args(["runs/x", "--onnx"])
    assert "unrecognized arguments: --onnx" in capsys.readouterr().err
