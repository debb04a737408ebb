import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from matplotlib.figure import Figure
from shared import PNG_CLASSES as CLASSES
from shared import oof_table

import lib.insight.analysis as analysis
from lib.core.metrics import log_loss
from lib.data.dataset import load_resized
from lib.predict.oof import load_runs


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny forward passes: one thread is fastest and does not stall on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _onehot(pred, conf=0.8):
    p = np.full((len(pred), 3), (1 - conf) / 2)
    p[np.arange(len(pred)), pred] = conf
    return p


def _write_run(runs_dir, name, fold, oof, lr=1e-3, complete=True, epochs=None):
    """A run folder; ``epochs`` (best, last validation log loss) writes the keys metrics.json has had
    since it records both epochs, else it is an older run's."""
    d = runs_dir / name
    d.mkdir(parents=True)
    (d / "params.yaml").write_text(yaml.safe_dump({"data_dir": "data/x", "backbone": name.split("_f")[0],
                                                   "fold": fold, "lr": lr, "run_name": name}))
    y, p = analysis.oof_arrays(oof, CLASSES)
    metrics = {"complete": complete, "log_loss": log_loss(y, p), "accuracy": 0.5, "f1_macro": 0.5, "best_epoch": 2,
               "minutes": 1.5}
    if epochs:
        metrics |= {"monitor": "log_loss", "weights_from": "last", "weights_epoch": 4, "last_epoch": 4,
                    "valid_best": {"log_loss": epochs[0], "accuracy": 0.6}, "valid_last": {"log_loss": epochs[1]},
                    "epochs": [{"epoch": 0, "seconds": 30.0 * (fold + 1)}, {"epoch": 1, "seconds": 90.0 * (fold + 1)}]}
        (d / "env.json").write_text(json.dumps({"precision": "bf16" if fold else "fp32"}))
    (d / "metrics.json").write_text(json.dumps(metrics))
    oof.to_csv(d / "oof.csv", index=False)


# ---------------------------------------------------------------- confusions, losses, leaderboard

def test_confusion_pairs_count_both_directions(tmp_path):
    y = np.repeat([0, 1, 2], 10)
    pred = y.copy()
    pred[:4] = 1       # 4 x class 0 -> 1
    pred[10] = 0       # 1 x class 1 -> 0
    pred[20:22] = 0    # 2 x class 2 -> 0
    cm = analysis.confusion_table(oof_table(y, _onehot(pred)), CLASSES, save=tmp_path / "cm.csv")
    assert cm.loc["영", "일"] == 4 and cm.loc["일", "영"] == 1 and cm.loc["영", "영"] == 6
    assert cm.to_numpy().sum() == 30
    back = pd.read_csv(tmp_path / "cm.csv", index_col=0)
    assert np.array_equal(back.to_numpy(), cm.to_numpy()) and list(back.columns) == CLASSES

    pairs = analysis.confusion_pairs(cm)
    assert len(pairs) == 2  # 일 <-> 칠 번 never confused
    first = pairs.iloc[0]
    assert (first["true"], first["predicted"], first["count"], first["reverse"], first["total"]) == (
        "영", "일", 4, 1, 5)
    assert first["share"] == pytest.approx(0.4)
    second = pairs.iloc[1]
    assert (second["true"], second["predicted"], second["count"], second["reverse"]) == ("칠 번", "영", 2, 0)
    assert len(analysis.confusion_pairs(cm, top=1)) == 1


def test_top_losses_ranking_and_noisy_label_export(tmp_path):
    y = np.array([0, 0, 1, 1, 2])
    probs = np.array([[0.90, 0.05, 0.05],   # right
                      [0.02, 0.95, 0.03],   # confidently wrong: a noisy-label candidate
                      [0.50, 0.40, 0.10],   # wrong, unsure
                      [0.10, 0.80, 0.10],   # right
                      [0.01, 0.01, 0.98]])  # right
    losses = analysis.top_losses(oof_table(y, probs), CLASSES)
    assert list(losses["id"]) == ["img001", "img002", "img003", "img000", "img004"]
    assert losses["loss"].is_monotonic_decreasing
    assert losses["loss"].iloc[0] == pytest.approx(-np.log(0.02))
    top = losses.iloc[0]
    assert (top["label"], top["predicted"], top["p_label"], top["p_pred"]) == ("영", "일", 0.02, 0.95)

    path = tmp_path / "analysis" / "noisy_labels.csv"
    noisy = analysis.export_noisy_labels(losses, path, min_p_pred=0.9)
    assert list(noisy["id"]) == ["img001"]
    back = pd.read_csv(path, dtype={"id": str})  # what 02_train's exclude_ids reads
    assert list(back.columns) == ["id", "label", "predicted", "p_label", "p_pred", "loss"]
    assert set(back["id"]) == {"img001"}
    assert list(analysis.export_noisy_labels(losses, path, min_p_pred=0.5)["id"]) == ["img001", "img002"]
    with pytest.raises(ValueError, match="min_p_pred"):
        analysis.export_noisy_labels(losses, path, min_p_pred=2)


def test_leaderboard_with_missing_fold(tmp_path):
    rng = np.random.default_rng(0)
    y = np.tile([0, 1, 2], 4)
    folds = np.repeat([0, 1, 2], 4)
    probs = rng.dirichlet(np.ones(3), size=len(y))
    ids = [f"i{k:02d}" for k in range(len(y))]
    full = oof_table(y, probs, ids)
    full["fold"] = folds
    for f in range(3):  # beta records its best and last epochs' validation log loss; alpha predates that
        _write_run(tmp_path, f"beta_f{f}", f, full[full["fold"] == f], lr=1e-3, epochs=(0.5, 0.5 + 0.1 * f))
    for f in range(2):  # alpha lacks fold 2
        _write_run(tmp_path, f"alpha_f{f}", f, full[full["fold"] == f], lr=3e-3)
    _write_run(tmp_path, "gamma_f0", 0, full[full["fold"] == 0], complete=False)

    with pytest.warns(UserWarning) as rec:
        runs, oofs = load_runs(tmp_path, CLASSES, n_folds=3)
    msgs = " ".join(str(w.message) for w in rec)
    assert "alpha: folds [2]" in msgs and "gamma_f0" in msgs
    assert sorted(oofs) == ["alpha", "beta"] and len(oofs["alpha"]) == 8

    lb = analysis.leaderboard(runs, oofs, CLASSES, save=tmp_path / "leaderboard.csv")
    assert list(lb[lb["model"] == "alpha"]["fold"]) == ["0", "1", "cv"]
    assert list(lb[lb["model"] == "beta"]["fold"]) == ["0", "1", "2", "cv"]
    assert "lr" in lb.columns and "data_dir" not in lb.columns and "run_name" not in lb.columns
    cv = analysis.cv_table(lb).set_index("model")
    assert cv.loc["beta", "log_loss"] == pytest.approx(log_loss(y, probs))
    assert cv.loc["alpha", "n_oof"] == 8 and cv.loc["alpha", "minutes"] == pytest.approx(3.0)
    assert cv.loc["alpha", "log_loss"] == pytest.approx(log_loss(y[:8], probs[:8]))
    back = pd.read_csv(tmp_path / "leaderboard.csv")
    assert back.shape == lb.shape
    # the best epoch's validation score beside the last's, and the optimism of picking it on the scored fold
    beta = lb[lb["model"] == "beta"].set_index("fold")
    assert list(beta["monitor_gap"]) == pytest.approx([0.0, 0.1, 0.2, 0.1])          # folds 0-2, then their mean
    assert list(beta["monitor_last"]) == pytest.approx([0.5, 0.6, 0.7, 0.6])
    assert (beta.loc["1", "weights_epoch"], beta.loc["1", "best_epoch"], beta.loc["1", "last_epoch"]) == (4, 2, 4)
    assert beta.loc["cv", "monitor"] == "log_loss" and np.isnan(beta.loc["cv", "weights_epoch"])
    # how fast each run trained, and in what: a slow machine or an emulated dtype shows at once
    assert list(beta["min_per_epoch"]) == pytest.approx([1.0, 2.0, 3.0, 2.0])
    assert list(beta["precision"]) == ["fp32", "bf16", "bf16", "bf16/fp32"]
    assert lb[lb["model"] == "alpha"]["min_per_epoch"].isna().all()             # an older run: not recorded
    alpha = lb[lb["model"] == "alpha"]                                                # older metrics.json: NaN
    assert alpha[["monitor_best", "monitor_last", "monitor_gap", "weights_epoch", "last_epoch"]].isna().all().all()
    assert cv.loc["beta", "monitor_gap"] == pytest.approx(0.1) and np.isnan(cv.loc["alpha", "monitor_gap"])
    assert {"monitor_best", "monitor_last", "monitor_gap"} <= set(cv.columns) and "weights_epoch" not in cv.columns
    best = "alpha" if cv.loc["alpha", "log_loss"] < cv.loc["beta", "log_loss"] else "beta"
    assert analysis.focus_model(lb) == best and analysis.focus_model(lb, "beta") == "beta"
    with pytest.raises(ValueError, match="focus='gamma' is not a loaded model"):
        analysis.focus_model(lb, "gamma")

    with pytest.raises(ValueError, match=r"models \['nope'\] have no run folder"):
        load_runs(tmp_path, CLASSES, models=["nope"])


def test_monitor_gap_is_the_best_epochs_lead_in_its_direction():
    runs = pd.DataFrame({"monitor": ["log_loss", "accuracy", "f1_macro", None],
                         "monitor_best": [0.30, 0.92, 0.80, np.nan], "monitor_last": [0.35, 0.90, 0.80, np.nan]})
    gap = analysis.monitor_gap(runs)
    assert list(gap[:3]) == pytest.approx([0.05, 0.02, 0.0]) and np.isnan(gap[3])


def test_model_disagreement_counts_and_gain():
    y = np.array([0, 1, 2, 0, 1, 2])
    a = oof_table(y, _onehot([0, 1, 2, 1, 1, 2], 0.8))  # wrong on row 3, more confident
    b = oof_table(y, _onehot([0, 1, 0, 0, 1, 2], 0.6))  # wrong on row 2
    t = analysis.model_disagreement({"a": a, "b": b}, CLASSES).iloc[0]
    assert (t["disagree"], t["a_right"], t["b_right"], t["neither_right"]) == (2, 1, 1, 0)
    assert t["log_loss_blend"] < min(t["log_loss_a"], t["log_loss_b"]) and t["gain"] > 0
    assert t["accuracy_blend"] == pytest.approx(5 / 6)  # the more confident model wins both disagreements


# ---------------------------------------------------------------- galleries and figures

def test_galleries_return_figures_and_read_only_shown_images(png_comp, monkeypatch):
    comp = png_comp
    y = comp.train["target"].to_numpy()
    pred = y.copy()
    pred[np.flatnonzero(y == 0)[:3]] = 1  # three 영 predicted as 일
    oof = oof_table(y, _onehot(pred), ids=comp.train["id"].to_numpy())
    reads = []
    monkeypatch.setattr(analysis, "load_resized", lambda p, s: reads.append(p) or load_resized(p, s))

    fig = analysis.pair_gallery(oof, comp, "영", "일", n=4, size=16)
    assert isinstance(fig, Figure)
    assert len(reads) == 3 + 4 + 4  # 3 confused + 4 typical 일 + 4 typical 영; no 일 -> 영 row
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 12 and sum(bool(ax.get_title()) for ax in shown) == 11

    losses = analysis.top_losses(oof, comp.classes)
    reads.clear()
    assert isinstance(analysis.loss_gallery(losses.head(5), comp, size=16), Figure)
    assert len(reads) == 5
    figs = analysis.pair_galleries(oof, comp, analysis.confusion_pairs(analysis.confusion_table(oof, comp.classes)))
    assert len(figs) == 1 and isinstance(figs[0], Figure)
    assert isinstance(analysis.plot_confusion(analysis.confusion_table(oof, comp.classes), 2), Figure)
    fig, T = analysis.reliability_figure(y, _onehot(pred, 0.99))
    assert isinstance(fig, Figure) and T > 1  # over-confident predictions get softened
    table = analysis.per_class(oof, comp.classes)
    assert table.iloc[0]["class"] in ("영", "일") and table["n"].sum() == len(y)




def test_confusion_heatmap_labels_classes_by_name():
    y = np.array([0, 0, 1, 1, 2, 2])
    oof = oof_table(y, _onehot([1, 0, 0, 1, 2, 1]))
    cm = analysis.confusion_table(oof, CLASSES)
    fig = analysis.plot_confusion(cm, 3, names=["alpha", "beta", "gamma"])
    ticks = {t.get_text() for t in fig.axes[0].get_yticklabels()}
    assert ticks == {"alpha", "beta", "gamma"}
