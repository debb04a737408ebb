"""lib.insight.eda and lib.insight.eda_plots on ``comps`` (tests/shared.py: two competitions made of real photos)."""
import io
import warnings

import pytest
from shared import PHOTO_CLASSES as CLASSES

from lib.insight import duplicates, eda, eda_plots, image_stats, shift, viz


def test_class_table_and_plots_draw_without_glyph_warnings(comps):
    import matplotlib
    import matplotlib.pyplot
    matplotlib.use("Agg")
    c = comps[0]["shifted"]
    t = eda.class_table(c, n_folds=25)
    assert t["name"].tolist() == CLASSES and t["count"].sum() == len(c.train)
    assert t["fewer_than_folds"].tolist() == [True, True, True]
    assert viz.plot_labels(["a b", "\U0010fffd"]) == ["a b", "#1"]  # no font has that code point
    stats = image_stats.image_stats(c, workers=1)
    dups = duplicates.find_duplicates(c, stats, save=False)

    def draw(*plots):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. "Glyph ... missing from font(s)"
            for plot in plots:
                plot().savefig(io.BytesIO(), format="png", dpi=40)
            matplotlib.pyplot.close("all")

    with_names = (lambda: eda_plots.plot_class_counts(c), lambda: eda_plots.show_class_grid(c, per_class=2),
                  lambda: eda_plots.show_pairs(c, dups, "conflict"))
    draw(*with_names, lambda: eda_plots.plot_geometry(c), lambda: eda_plots.show_images(c, label=1, n=4),
         lambda: eda_plots.show_images(c, ids=["leak_rot", "tr015"]), lambda: eda_plots.show_pairs(c, dups, "leak"),
         lambda: eda_plots.plot_shift(stats, shift.shift_scores(c, stats, adversarial=False, save=False)))
    with pytest.MonkeyPatch.context() as mp:  # a machine without any Hangul font: classes by index
        mp.setattr(viz, "_covered", lambda families=None: frozenset(range(128)))
        mp.setattr(viz, "_font_for", lambda need: None)
        assert viz.plot_labels(c.classes) == ["#0", "#1", "#2"]
        draw(*with_names)
    with pytest.raises(KeyError, match="nope"):
        eda_plots.show_images(c, ids=["nope"])
