"""Score trained runs, or 04's blend, on any labelled folder, predicted as 05 predicts (timm's validate.py).

    python -m lib.ops.validate --run runs/convnext_tiny_f0 --data data/holdout
    python -m lib.ops.validate --run runs/convnext_tiny_f0 runs/convnext_tiny_f1 --data data/holdout --tta hflip
    python -m lib.ops.validate --blend runs/ensemble/blend.json --data data/holdout      # 05's TTA, size, calibration

``--data`` is a folder of labelled images (``lib.data.competition.open_labelled``: ``<class>/<file>``, or a
competition folder's train side) in the classes the runs predict. ``--run``: one or more runs, their
probabilities averaged (the folds of a model, as 04 averages them), re-predicted from params.yaml and
model.safetensors (``lib.predict.inference.predict_images``) with ``--tta``, ``--tta-space`` and
``--predict-size``; a run has no calibration of its own, so they are scored as its oof.csv is. ``--blend``:
04's ``blend.json`` predicted exactly as 05 submits it (``lib.predict.pipeline.predict_blend``: its runs,
weights, TTA ops, size, temperature and decision offsets; ``--tta``/``--predict-size`` override, which
leaves 04's calibration out, as in 05). Prints log loss, accuracy and macro F1; writes the predictions
(id, target, label, predicted, one probability column per class) atomically to ``--out`` (default
``<runs>/validate/<data folder>-<run or blend>.csv``). Images that cannot be read are named, not scored.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.io import read_json, write_csv
from lib.core.metrics import scores
from lib.core.paths import relative, resolve
from lib.core.rundir import RunDir, load_config
from lib.data.competition import open_competition, open_labelled
from lib.predict.inference import PredictSpec, predict_images
from lib.predict.pipeline import blend_spec, predict_blend
from lib.predict.submission import load_blend


def run_class_table(run_dir: Path) -> dict:
    """The class table a run predicts: its classes.json, else (a run from before it) its competition's."""
    if RunDir(run_dir).classes.exists():
        return read_json(RunDir(run_dir).classes)
    return open_competition(load_config(run_dir).data_dir).class_table()


def validate(data_dir, runs=None, blend=None, spec: PredictSpec | None = None, tta=None, predict_size=None,
             models=None, out=None, work=None, **settings) -> dict:
    """Score ``runs`` (run folders, probabilities averaged; ``spec`` None: plain) or ``blend`` (04's blend.json,
    predicted as 05 does; ``tta``, ``predict_size`` override 04's, ``models`` keeps a subset) on the labelled
    folder ``data_dir``. ``settings``: batch_size, device, num_workers, progress (``PredictSpec``).
    Returns {n, log_loss, accuracy, f1_macro, problems (split, path, problem: the files not scored), out,
    spec} and writes the predictions to ``out`` (see the module docstring)."""
    if (runs is None) == (blend is None):
        raise ValueError("give runs (one or more run folders) or blend (04's ensemble/blend.json), not both")
    if blend is not None:
        path = resolve(blend)
        path = path / "ensemble" / "blend.json" if path.is_dir() else path
        runs_dir = path.parent.parent  # 04 writes <runs_dir>/ensemble/blend.json; its run names are in runs_dir
        if path.name != "blend.json" or path.parent.name != "ensemble":
            raise ValueError(f"{blend}: give 04's <runs_dir>/ensemble/blend.json (or its runs folder); its runs "
                             "are found beside the ensemble folder")
        plan = load_blend(path)
        spec = spec or blend_spec(runs_dir, tta, predict_size, **settings)
        comp = open_labelled(data_dir, plan["class_table"], work)
        ids, probs = predict_blend(plan, runs_dir, comp, "train", comp.train, spec, models)
        what = "blend"
    else:
        dirs = [resolve(r) for r in ([runs] if isinstance(runs, (str, Path)) else runs)]
        missing = [str(d / f) for d in dirs for f in RunDir.PREDICT if not (d / f).exists()]
        if missing:
            raise FileNotFoundError(f"{missing[:3]}: not there; a run to score needs its params.yaml and "
                                    "model.safetensors (finish it with 02_train)")
        tables = {d.name: run_class_table(d) for d in dirs}
        table = tables[dirs[0].name]
        other = [n for n, t in tables.items() if t["classes"] != table["classes"]]
        if other:
            raise ValueError(f"runs {other} predict other classes than {dirs[0].name}; score them separately")
        spec = spec or PredictSpec(tta or ("identity",), size=predict_size, **settings)
        comp = open_labelled(data_dir, table, work)
        probs = np.mean([predict_images(d, comp, "train", comp.train, spec) for d in dirs], axis=0)
        ids, runs_dir = comp.train["id"].to_numpy(), dirs[0].parent
        what = dirs[0].name if len(dirs) == 1 else f"{dirs[0].name}+{len(dirs) - 1}"
    y = comp.train.set_index("id").loc[ids, "target"].to_numpy(np.int64)
    table = pd.DataFrame(probs, columns=comp.classes)
    table.insert(0, "predicted", np.asarray(comp.classes, dtype=object)[probs.argmax(axis=1)])
    table.insert(0, "label", np.asarray(comp.classes, dtype=object)[y])
    table.insert(0, "target", y)
    table.insert(0, "id", ids)
    out = resolve(out) if out else runs_dir / "validate" / f"{comp.root.name}-{what}.csv"
    write_csv(out, table)
    return {"n": len(y), **scores(y, probs), "problems": comp.problems, "out": out, "spec": spec}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", nargs="+", help="run folder(s) (runs/<run>); several: their mean")
    who.add_argument("--blend", help="04's runs/ensemble/blend.json (or its runs folder): scored as 05 predicts")
    ap.add_argument("--data", required=True, help="labelled folder: <class>/<file>, or a competition folder")
    ap.add_argument("--tta", nargs="+", default=None, help="TTA ops (lib.model.tta); runs: identity, blend: 04's")
    ap.add_argument("--tta-space", default="prob", choices=["prob", "logit"], help="runs only (a blend: 04's)")
    ap.add_argument("--predict-size", type=int, default=None, help="pixels (runs: their img_size, blend: 04's)")
    ap.add_argument("--models", nargs="+", default=None, help="blend only: these models (weights renormalised)")
    ap.add_argument("--out", default=None, help="predictions CSV (default <runs>/validate/<data>-<what>.csv)")
    ap.add_argument("--work", default=None, help="where derived files of --data go (default beside it)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args(argv)
    settings = {"batch_size": a.batch_size, "device": a.device, "num_workers": a.num_workers, "progress": a.progress}
    if a.run:
        spec = PredictSpec(a.tta or ("identity",), a.tta_space, size=a.predict_size, **settings)
        r = validate(a.data, runs=a.run, spec=spec, out=a.out, work=a.work)
    else:
        r = validate(a.data, blend=a.blend, tta=a.tta, predict_size=a.predict_size, models=a.models, out=a.out,
                     work=a.work, **settings)
    s = r["spec"]
    print(f"{relative(resolve(a.data))}: {r['n']} images scored with TTA {list(s.ops)} ({s.space}) at "
          f"{s.size or 'each run its own'} px")
    print(f"log_loss {r['log_loss']:.6f}  accuracy {r['accuracy']:.6f}  f1_macro {r['f1_macro']:.6f}")
    for p in r["problems"].itertuples():
        print(f"not scored: {p.path}: {p.problem}")
    print(f"predictions: {relative(r['out'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
