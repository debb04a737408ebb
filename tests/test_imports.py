"""Importing lib changes nothing in the process (umask, Pillow's pixel limit, warning filters, logging),
and lib keeps its house rules: no import inside a function but of an optional package (or in a command
line's main(), after parsing its arguments), no cycle.
The floors themselves (each imports only those below it) are import-linter's contract in pyproject.toml,
run by `make lint`."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PROBE = """
import logging, os, pkgutil, importlib, warnings, json
from PIL import Image
import matplotlib

def state():
    mask = os.umask(0o022); os.umask(mask)
    return {"umask": mask, "pillow": Image.MAX_IMAGE_PIXELS, "filters": [repr(f) for f in warnings.filters],
            "loggers": {n: logging.getLogger(n).level for n in ("", "matplotlib", "matplotlib.font_manager")},
            "rc": matplotlib.rcParams["font.family"]}

import torch, timm, fastai.vision.all, albumentations, sklearn, cv2, pandas, matplotlib.pyplot, seaborn  # their own
before = state()
import lib
mods = [m.name for m in pkgutil.walk_packages(lib.__path__, "lib.")]
for m in mods:
    importlib.import_module(m)
after = state()
print(json.dumps({"same": before == after, "before": before, "after": after, "modules": len(mods)}))
"""


def test_importing_lib_has_no_side_effects():
    import json
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["modules"] >= 60
    assert res["same"], {k: (res["before"][k], res["after"][k])
                         for k in res["before"] if res["before"][k] != res["after"][k]}


# the packages a module may import inside a function: optional extras, installed only by who uses them
OPTIONAL = {"ray", "mlflow", "wandb", "onnx", "onnxruntime", "onnxscript", "selenium", "s3fs"}


def _imports(tree):
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [a.name for a in node.names], id(node) in top
        elif isinstance(node, ast.ImportFrom):
            yield node, [("." * node.level) + (node.module or "")], id(node) in top


def _command_line_main(tree) -> set[int]:
    """The imports inside ``main()`` of a command line (a module that runs it under ``__name__ == "__main__"``):
    it imports its work after parsing its arguments, so ``--help`` answers without loading torch (lib.core.cli)."""
    runs_main = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
    mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"] if runs_main else []
    return {id(node) for f in mains for node in ast.walk(f) if isinstance(node, (ast.Import, ast.ImportFrom))}


def test_imports_inside_functions_are_for_optional_packages_only():
    lib = Path(__file__).resolve().parents[1] / "lib"
    inner = []
    for p in sorted(lib.rglob("*.py")):
        tree = ast.parse(p.read_text())
        allowed = _command_line_main(tree)
        inner += [f"{p.relative_to(lib.parent)}:{node.lineno} imports {names[0]}" for node, names, at_top in
                  _imports(tree) if not at_top and names[0].split(".")[0] not in OPTIONAL and id(node) not in allowed]
    assert not inner, ("import at the top of the module (or add an optional package to OPTIONAL; a command line's "
                       "main() imports its work after parsing):\n" + "\n".join(inner))


def test_lib_imports_are_absolute_and_acyclic():
    """One spelling (``from lib.<floor>.<module> import``), so a reader and import-linter see every edge; and
    no module reaches itself through its own imports."""
    lib = Path(__file__).resolve().parents[1] / "lib"
    edges = {}
    for p in lib.rglob("*.py"):
        mod = ".".join(p.relative_to(lib.parent).with_suffix("").parts).removesuffix(".__init__")
        deps = set()
        for node, names, _ in _imports(ast.parse(p.read_text())):
            assert not names[0].startswith("."), f"{p}:{node.lineno}: relative import {names[0]}"
            if names[0].startswith("lib."):
                deps.add(names[0])
        edges[mod] = deps
    seen, stack = {}, []

    def visit(m):
        seen[m] = 1
        stack.append(m)
        for d in edges.get(m, ()):
            assert seen.get(d) != 1, "import cycle: " + " -> ".join(stack[stack.index(d):] + [d])
            if d not in seen:
                visit(d)
        stack.pop()
        seen[m] = 2

    for m in edges:
        if m not in seen:
            visit(m)
