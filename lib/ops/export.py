"""Trained runs as ONNX files, to serve them or predict where PyTorch is not installed.

    python -m lib.ops.export runs/convnext_tiny_f0            # -> runs/convnext_tiny_f0/model.onnx
    python -m lib.ops.export --blend runs --out export        # every run of 04's blend, and blend.json

ONNX is the one format written (``lib.ops.onnx_export``: what a file takes and gives, in
``model.onnx.json`` beside it). A single run is checked after export: onnxruntime against PyTorch on
the competition's images. The work is imported once the arguments are read, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse

from lib.core.cli import command_parser
from lib.core.paths import relative


def parser() -> argparse.ArgumentParser:
    ap = command_parser("lib.ops.export", __doc__)
    ap.add_argument("run", nargs="?", help="a finished run folder, e.g. runs/convnext_tiny_f0")
    ap.add_argument("--blend", metavar="RUNS_DIR", help="export every run of 04's blend in this runs folder")
    ap.add_argument("--out", default=None, help="the ONNX file (one run; None: <run>/model.onnx) or the folder "
                    "(--blend; None: export)")
    ap.add_argument("--no-check", action="store_true", help="one run: skip the onnxruntime vs PyTorch comparison")
    return ap


def main(argv=None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    if bool(a.run) == bool(a.blend):
        ap.error("give a run folder or --blend RUNS_DIR")
    from lib.ops.onnx_export import check_onnx, export_blend, export_onnx
    if a.blend:
        out = export_blend(a.blend, a.out or "export")
        print(f"exported the blend's runs to {relative(out)}")
        return 0
    path = export_onnx(a.run, a.out)
    print(f"wrote {relative(path)} and {relative(path.with_suffix('.onnx.json'))}")
    if not a.no_check:
        print(f"max |onnxruntime - PyTorch| probability on the competition's images: {check_onnx(a.run, path):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
