"""Class names in figures: every figure kind of the notebooks, drawn on a machine without a CJK font,
writes ``#index`` with its key printed beside it, and matplotlib never draws a missing glyph."""
import io
import warnings

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from shared import PNG_CLASSES, oof_table

from lib.insight import analysis, duplicates, eda_plots, image_stats, shift, viz
from lib.train import report

matplotlib.use("Agg")


@pytest.fixture()
def no_cjk_font(monkeypatch):
    """matplotlib with its default font only (DejaVu Sans: no Hangul) and no installed font to add."""
    monkeypatch.setattr(viz, "_font_for", lambda need: None)
    with matplotlib.rc_context({"font.family": ["DejaVu Sans"]}):
        yield


def _strict(*figures):
    """Build and render each figure with matplotlib's missing-glyph warning as an error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"Glyph .* missing from font")
        for make in figures:
            fig = make()
            fig = fig[0] if isinstance(fig, tuple) else fig
            assert fig is not None
            fig.savefig(io.BytesIO(), format="png", dpi=40)
    plt.close("all")


def test_the_key_lists_only_the_classes_a_figure_shows(no_cjk_font, capsys):
    assert viz.plot_labels(["cat", "영", "칠 번"], used=[0, 2]) == ["cat", "#1", "#2"]
    out = capsys.readouterr().out
    assert "1 name(s) written as #index" in out and "#2 = 칠 번" in out and "#1" not in out
    assert viz.plot_labels(["cat", "영"], used=[0]) == ["cat", "#1"] and capsys.readouterr().out == ""
    assert viz.drawable("사진 0.jpg") == "?? 0.jpg"
    with pytest.warns(UserWarning, match="missing from font"):  # the test's premise: Hangul has no glyph here
        fig = plt.figure()
        fig.text(0.5, 0.5, "영")
        fig.savefig(io.BytesIO(), format="png")
    plt.close("all")


def test_a_cjk_font_draws_the_names_and_prints_no_key(capsys):
    if viz.class_font(PNG_CLASSES) is None:
        pytest.skip("no installed font draws Hangul (apt-get install fonts-nanum)")
    assert viz.plot_labels(PNG_CLASSES) == PNG_CLASSES and capsys.readouterr().out == ""
    # the font is the figure's, not the process's: rcParams are as before, the figure's text keeps it
    before = list(plt.rcParams["font.family"])
    fig = viz.image_grid([np.zeros((8, 8, 3), np.uint8)], [PNG_CLASSES[0]], title=PNG_CLASSES[1])
    assert plt.rcParams["font.family"] == before
    assert fig._suptitle.get_fontfamily()[-1] == viz.class_font(PNG_CLASSES) not in before
    _strict(lambda: fig)  # drawn after the context ended: still no missing glyph


def test_oof_and_training_figures_draw_no_missing_glyph(png_comp, no_cjk_font, capsys):
    comp = png_comp
    y = comp.train["target"].to_numpy()
    pred = y.copy()
    pred[np.flatnonzero(y == 0)[:3]] = 2  # 영 predicted as 칠 번
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), pred] = 0.8
    oof = oof_table(y, probs, ids=comp.train["id"].to_numpy())
    cm = analysis.confusion_table(oof, comp.classes)
    losses = analysis.top_losses(oof, comp.classes).head(6)
    items = [(np.full((16, 16, 3), 40 * k, np.uint8), k % 3) for k in range(6)]  # (image, target) like ImageDataset
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "valid_loss": 1.1, "log_loss": 1.0, "accuracy": 0.5,
                "f1_macro": 0.4} for e in range(3)]
    _strict(lambda: analysis.plot_confusion(cm), lambda: analysis.pair_gallery(oof, comp, "영", "칠 번", n=4, size=16),
            lambda: analysis.loss_gallery(losses, comp, size=16), lambda: analysis.reliability_figure(y, probs),
            lambda: viz.show_batch(items, comp.classes, n=6), lambda: report.plot_curves(history),
            lambda: viz.image_grid([items[0][0]], ["사진 0"], title="영 사진"))
    out = capsys.readouterr().out
    assert "#0 = 영" in out and "#2 = 칠 번" in out
    fig = analysis.pair_gallery(oof, comp, "영", "칠 번", n=4, size=16)
    assert "A = #0, B = #2" in fig._suptitle.get_text()
    plt.close("all")


def test_eda_figures_draw_no_missing_glyph(comps, no_cjk_font, capsys):
    c = comps[0]["shifted"]
    stats = image_stats.image_stats(c, workers=1)
    dups = duplicates.find_duplicates(c, stats, save=False)
    _strict(lambda: eda_plots.plot_class_counts(c), lambda: eda_plots.plot_class_counts(c, max_labels=2),
            lambda: eda_plots.show_class_grid(c, per_class=2), lambda: eda_plots.show_images(c, label=1, n=4),
            lambda: eda_plots.show_images(c, ids=["leak_rot", "tr015"]),
            lambda: eda_plots.show_pairs(c, dups, "conflict"), lambda: eda_plots.show_pairs(c, dups, "leak"),
            lambda: eda_plots.plot_geometry(c),
            lambda: eda_plots.plot_shift(stats, shift.shift_scores(c, stats, adversarial=False, save=False)))
    out = capsys.readouterr().out
    assert "#0 = 고양이" in out and "#2 = 커피 잔" in out
