"""Run 02_train for every params file x fold through papermill, locally or on a Ray cluster.

    python -m lib.ops.grid --params params/convnext_tiny.yaml params/efficientnetv2_s.yaml --folds 0-4
    python -m lib.ops.grid --params params/demo/*.yaml --folds 0-2 --jobs 2 -p data_dir data/fmnist -p n_folds 3
    python -m lib.ops.grid --params params/demo/*.yaml -y "{loss_args: {label_smoothing: 0.1}, stages: [[24, 2]]}"
    python -m lib.ops.grid --params params/*.yaml --folds 0-4 --backend ray --address auto
    python -m lib.ops.grid --params params/demo/*.yaml --full   # then each recipe's full-data refit (lib.predict.refit)

Overrides reach every run as papermill's do: ``-y`` YAML mappings (lists and dicts), then ``-p NAME VALUE``
(text read as papermill reads it: True/False/None, a number, else the text), later ones winning. What the
grid does with them (skips, resumes, retries, reports) is ``lib.ops.runner.run_grid``'s; this module is its
command line and imports it only once the arguments are read, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import json
import sys

import yaml

from lib.core.cli import command_parser


def parse_folds(spec: str) -> list[int]:
    """"0-4" -> [0..4], "0,2,3" -> [0, 2, 3]."""
    out = []
    try:
        for part in str(spec).split(","):
            a, _, b = part.partition("-")
            out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: give folds as a range or a list, e.g. 0-4 or 0,2") from None
    return out


def parse_value(text: str):
    """A ``-p`` value as papermill reads it: True/False/None, an int, a float, else the text."""
    consts = {"True": True, "False": False, "None": None}
    if text in consts:
        return consts[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_yaml(text: str) -> dict:
    """A ``-y`` value: a YAML mapping of settings, e.g. ``{tta: [identity, hflip]}``."""
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as e:
        why = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise argparse.ArgumentTypeError(f"{text!r} is not YAML ({why}); e.g. -y \"{{stages: [[24, 2]]}}\"") from None
    if not isinstance(values, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a YAML mapping of setting: value, e.g. "
                                         "-y \"{loss_args: {label_smoothing: 0.1}}\"")
    return values


def overrides(yamls: list[dict], parameters: list[tuple[str, str]]) -> dict:
    """The settings every run gets: the ``-y`` mappings, then the ``-p`` pairs (papermill's order), later winning."""
    out = {}
    for values in yamls:
        out.update(values)
    out.update({name: parse_value(value) for name, value in parameters})
    return out


def parser() -> argparse.ArgumentParser:
    ap = command_parser("lib.ops.grid", __doc__)
    ap.add_argument("--params", nargs="+", required=True, metavar="YAML",
                    help="the recipes, one per backbone: params/*.yaml (a run is <file stem>_f<fold>)")
    ap.add_argument("--folds", type=parse_folds, default="0-4", help='the validation folds to run, e.g. "0-4" or "0,2"')
    ap.add_argument("--runs-dir", default="runs", help="where each run's folder, notebook and log go")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (local backend; one GPU each, if any)")
    ap.add_argument("--backend", default="local", choices=["local", "ray"], help="where the runs run")
    ap.add_argument("-y", "--yaml", type=parse_yaml, action="append", default=[], metavar="YAML",
                    help='override notebook parameters for every run with a YAML mapping (lists, dicts), e.g. '
                         '-y "{loss_args: {label_smoothing: 0.1}}"')
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="override a notebook parameter for every run, e.g. -p data_dir data/mycomp")
    ap.add_argument("--notebook", default="notebooks/02_train.ipynb", help="the notebook each run executes")
    ap.add_argument("--force", action="store_true", help="retrain runs recorded with another recipe or data")
    ap.add_argument("--full", action="store_true", help="full-data refits <stem>_full (after the folds), not folds")
    ray = ap.add_argument_group("Ray backend (--backend ray)")
    ray.add_argument("--address", default=None, help="Ray cluster address, e.g. auto or ray://host:10001 "
                     "(None: a local Ray)")
    ray.add_argument("--cpus-per-run", type=float, default=1, help="CPUs each run asks for (its loader workers)")
    ray.add_argument("--gpus-per-run", type=float, default=0, help="GPUs each run asks for")
    ray.add_argument("--resources", type=json.loads, default=None,
                     help="custom resources per run as JSON, e.g. {\"a100\": 1}")
    ray.add_argument("--max-retries", type=int, default=3, help="retries of a run whose worker or node died")
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    from lib.ops.ray_grid import RayOptions
    from lib.ops.runner import run_grid
    try:
        res = run_grid(a.params, a.folds, a.runs_dir, a.jobs, a.backend, overrides=overrides(a.yaml, a.parameter),
                       notebook=a.notebook, force=a.force, full=a.full,
                       ray=RayOptions(a.address, a.cpus_per_run, a.gpus_per_run, a.resources, a.max_retries))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"grid: nothing was run.\n{e}", file=sys.stderr)
        return 2
    pushed, backups = res.get("pushed", []), res.get("backup_failed", [])
    print(f"grid: {len(res['done'])} trained, " + (f"{len(pushed)} pushed again, " if pushed else "")
          + f"{len(res['skipped'])} skipped (complete), {len(res['failed'])} failed, {len(backups)} backup(s) failed")
    for name, nb, err in res["failed"]:
        print(f"  FAILED {name}: {err}\n         notebook: {nb}")
    for name, url, err in backups:
        print(f"  BACKUP FAILED {name} -> {url}: {err}")
    return 1 if res["failed"] or backups else 0


if __name__ == "__main__":
    raise SystemExit(main())
