"""bench/data_throughput.py end to end on a few photos: every path runs on the same JPEGs at the
asked quality, the decode floor is timed, and the last line prints both ratios."""
from __future__ import annotations

import os

import cv2
import torch
from PIL import Image


def test_throughput_script_prints_floor_and_both_ratios(bench_script, tmp_path, capsys):
    threads, cv_threads, omp = torch.get_num_threads(), cv2.getNumThreads(), os.environ.get("OMP_NUM_THREADS")
    try:
        bench_script("data_throughput").main(["--n", "3", "--size", "64", "--seconds", "0.5", "--quality", "60",
                                       "--out", str(tmp_path)])
    finally:  # the script pins everything to one core; give the test session its threads back
        torch.set_num_threads(threads), cv2.setNumThreads(cv_threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
    photos = sorted((tmp_path / "q60").glob("*.jpg"))
    assert len(photos) == 3
    with Image.open(photos[0]) as im:
        assert im.size == (1280, 960)
    lines = capsys.readouterr().out.strip().splitlines()
    assert "JPEG quality 60" in lines[0]
    # 960 // 8 >= 64: 1/8 is the kit's scale
    assert "1/8 scale" in lines[-2] and "best possible decode ratio" in lines[-2]
    ratios = [float(w.rstrip("x,")) for w in lines[-1].split() if w.endswith(("x", "x,")) and w[0].isdigit()]
    assert len(ratios) == 2 and all(r > 0 for r in ratios), lines[-1]
