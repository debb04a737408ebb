"""lib.insight.image_stats: the CSVs of the EDA pass carry ids, and the stats cache is reused, not rewritten."""
import os

import pandas as pd

from lib.insight import duplicates, eda, image_stats, shift


def test_writes_csvs_with_ids_and_reuses_the_cache(comps):
    c = comps[0]["shifted"]
    stats = image_stats.image_stats(c, workers=1)
    duplicates.find_duplicates(c, stats), shift.shift_scores(c, stats, adversarial=False)
    bad = eda.bad_files(c, stats)
    assert "broken" in set(bad["id"]) and bad.loc[bad["id"] == "broken", "problem"].str.contains("decode").all()
    for name in ("image_stats", "shift", "duplicates", "conflicts", "bad_files"):
        df = pd.read_csv(c.root / "eda" / f"{name}.csv")
        assert "id" in df.columns and len(df), name
    csv = c.root / "eda" / "image_stats.csv"
    before = os.stat(csv).st_mtime_ns
    again = image_stats.image_stats(c, workers=1)
    assert os.stat(csv).st_mtime_ns == before  # nothing recomputed, nothing rewritten
    pd.testing.assert_frame_equal(again.reset_index(drop=True), stats.reset_index(drop=True), check_dtype=False)
    assert stats["problem"].eq("").all() and len(stats) == len(c.train) + len(c.test)
    sub = image_stats.image_stats(c, max_images=10, workers=1)
    assert (sub["split"].value_counts() == 10).all()
