"""An offline bundle for code competitions: everything 05_inference needs, in one folder to upload
as a dataset.

    make_bundle("runs", "bundle")        # its command line: python -m lib.ops.bundle (make bundle)

The bundle holds ``wheels/`` (this project as a wheel, installed with ``pip install --no-index
--find-links wheels --no-deps foldbook``: the kernel's own torch, timm, fastai... are used),
``runs/`` (the runs 04's blend uses: params.yaml, model.safetensors, metrics.json, classes.json, and
``ensemble/blend.json``), ``05_inference.ipynb`` pointing at those two folders, and
``manifest.json`` (each file's size and sha256, the git commit). It is built in a temporary folder
and renamed into place, so an interrupted build leaves nothing half-made.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lib.core.io import file_sha256, write_json
from lib.core.paths import repo_root, resolve
from lib.core.rundir import RunDir
from lib.predict.submission import load_blend
from lib.train.report import environment

RUN_FILES = (RunDir.PARAMS, RunDir.WEIGHTS, RunDir.METRICS, RunDir.CLASSES)


def make_bundle(runs_dir="runs", out="bundle", force: bool = False) -> Path:
    """Write the bundle of 04's blend in ``runs_dir`` to ``out``; returns ``out``."""
    runs_dir, out = resolve(runs_dir), resolve(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; remove it or pass force=True (--force)")
    if out.exists() and not is_bundle(out):  # force replaces an older bundle, never a folder of the user's
        raise FileExistsError(f"{out} exists and is not a bundle (no manifest.json of lib.ops.bundle); nothing "
                              "was deleted: give another --out, or move that folder away yourself")
    plan = load_blend(runs_dir / "ensemble" / "blend.json")
    runs = [r for names in plan["models"].values() for r in names]
    runs += [v["run"] for v in (plan.get("refit") or {}).values()]  # 04's full-data refits (lib.predict.refit)
    bad = [r for r in runs if not isinstance(r, str) or r in ("", ".", "..") or Path(r).name != r]
    if bad:
        raise ValueError(f"{runs_dir / 'ensemble' / 'blend.json'}: run names {bad[:4]} are not folder names "
                         "inside runs/ (one path component, no '..'); rerun 04 to write the blend again")
    missing = [str(runs_dir / r / f) for r in runs for f in RUN_FILES if not (runs_dir / r / f).exists()]
    if missing:
        raise FileNotFoundError(f"the blend's runs lack {missing[:4]}; finish them (02_train) and rerun 04")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp / "wheels"), str(repo_root())], check=True)
        shutil.rmtree(repo_root() / "build", ignore_errors=True)  # setuptools' leftovers
        for r in runs:
            (tmp / "runs" / r).mkdir(parents=True)
            for f in RUN_FILES:
                shutil.copy2(runs_dir / r / f, tmp / "runs" / r / f)
        (tmp / "runs" / "ensemble").mkdir()
        shutil.copy2(runs_dir / "ensemble" / "blend.json", tmp / "runs" / "ensemble" / "blend.json")
        _notebook(tmp / "05_inference.ipynb", out)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        write_json(tmp / "manifest.json", {
            "runs": runs, "git_commit": environment(0, "cpu")["git_commit"],
            "files": {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files}})
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` holds a bundle this module wrote (its manifest.json lists its files)."""
    try:
        return isinstance(json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8")).get("files"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def _notebook(path: Path, out: Path) -> None:
    """notebooks/05_inference.ipynb with ``runs_dir`` and ``wheels`` set to the bundle's folders."""
    nb = json.loads((repo_root() / "notebooks" / "05_inference.ipynb").read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    lines = []
    for line in cell["source"]:
        target = line.split("=")[0].rstrip()          # "runs_dir: str": the name and its type
        if target.split(":")[0].strip() in ("runs_dir", "wheels"):
            value = out / ("runs" if target.startswith("runs_dir") else "wheels")
            line = f"{target} = {str(value)!r}  # this bundle's; on Kaggle: /kaggle/input/<bundle>/{value.name}\n"
        lines.append(line)
    cell["source"] = lines
    # an offline kernel (Kaggle's) has no foldbook kernel: the bundle's notebook runs on the default one
    nb["metadata"]["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

