"""Score trained runs, or 04's blend, on any labelled folder, predicted as 05 predicts (timm's validate.py).

    python -m lib.ops.validate --run runs/convnext_tiny_f0 --data data/holdout
    python -m lib.ops.validate --run runs/convnext_tiny_f0 runs/convnext_tiny_f1 --data data/holdout --tta hflip
    python -m lib.ops.validate --blend runs/ensemble/blend.json --data data/holdout

``--data``: ``<class>/<file>`` or a competition folder's train side, in the runs' classes. ``--run``: their
probabilities averaged, scored as their oof.csv is; ``--blend``: 04's runs, weights, TTA, size and
calibration, as 05 submits (``--tta``/``--predict-size`` override, leaving 04's calibration out). Prints
log loss, accuracy and macro F1 and writes the predictions; the work is ``lib.predict.validate``,
imported once the arguments are read, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse

from lib.core.cli import command_parser
from lib.core.paths import relative, resolve


def parser() -> argparse.ArgumentParser:
    ap = command_parser("lib.ops.validate", __doc__)
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
    ap.add_argument("--batch-size", type=int, default=None,
                    help="images per forward pass (default: twice the run's training batch)")
    ap.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best there is)")
    ap.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: what suits)")
    ap.add_argument("--progress", action="store_true", help="progress bars")
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    from lib.predict.inference import PredictSpec
    from lib.predict.validate import validate
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
