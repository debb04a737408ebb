"""Importing lib changes nothing in the process: umask, Pillow's pixel limit, warning filters, logging."""
from __future__ import annotations

import subprocess
import sys

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
mods = [m.name for m in pkgutil.iter_modules(lib.__path__) if m.name not in ("demo", "summary", "grid")]
for m in mods + ["demo", "summary", "grid"]:
    importlib.import_module(f"lib.{m}")
after = state()
print(json.dumps({"same": before == after, "before": before, "after": after, "modules": len(mods)}))
"""


def test_importing_lib_has_no_side_effects():
    import json
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["modules"] >= 25
    assert res["same"], {k: (res["before"][k], res["after"][k])
                         for k in res["before"] if res["before"][k] != res["after"][k]}
