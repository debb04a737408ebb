"""lib.predict.oof: 03 and 04 open the runs; folds made without 01_eda's duplicate check say so there too."""
from __future__ import annotations

import pytest

from lib.data.folds import DuplicatesUnchecked
from lib.predict.oof import open_runs


def test_open_runs_warns_when_the_folds_were_made_before_the_duplicate_check(png_comp, png_run):
    """png_comp's folds were made before any 01_eda: 03/04 (open_runs) raise the warning, not only 02."""
    with pytest.warns(DuplicatesUnchecked, match="made before 01_eda's duplicate groups"):
        comp, runs, oofs = open_runs(png_comp.root, png_run.parent)
    assert list(runs["run_name"]) == ["tiny_f0"] and set(oofs) == {"tiny"}
