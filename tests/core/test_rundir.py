"""lib.core.rundir: a runs folder with no run yet reads back as an empty table, not an error."""
from __future__ import annotations

from lib.core.rundir import RUN_COLUMNS, find_runs


def test_no_run_yet_is_an_empty_table(tmp_path):
    (tmp_path / "runs").mkdir()
    for folder in (tmp_path / "runs", tmp_path / "never_made"):
        for complete_only in (True, False):
            runs = find_runs(folder, complete_only=complete_only, full_data=False)
            assert runs.empty and list(runs.columns) == RUN_COLUMNS
