"""Score trained runs, or 04's blend, on any labelled folder, predicted as 05 predicts (timm's validate.py);
the command line is ``lib.ops.validate``.

``data_dir`` is a folder of labelled images (``lib.data.competition.open_labelled``: ``<class>/<file>``, or a
competition folder's train side) in the classes the runs predict. ``runs``: one or more runs, their
probabilities averaged (the folds of a model, as 04 averages them), re-predicted from params.yaml and
model.safetensors (``lib.predict.inference.predict_images``) with the spec's TTA ops, space and size; a run
has no calibration of its own, so they are scored as its oof.csv is. ``blend``: 04's ``blend.json``
predicted exactly as 05 submits it (``lib.predict.pipeline.predict_blend``: its runs, weights, TTA ops,
size, temperature and decision offsets; ``tta``/``predict_size`` override, which leaves 04's calibration
out, as in 05). The predictions (id, target, label, predicted, one probability column per class) are
written atomically to ``out`` (default ``<runs>/validate/<data folder>-<run or blend>.csv``). Images that
cannot be read are named, not scored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.io import read_json, write_csv
from lib.core.metrics import scores
from lib.core.paths import resolve
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
