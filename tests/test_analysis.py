import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from matplotlib.figure import Figure
from PIL import Image
from sklearn.datasets import load_digits

import lib.analysis as analysis
from lib.augment import get_augment
from lib.backbones import create_backbone, save_weights
from lib.data import make_folds, scan_competition
from lib.dataset import load_resized
from lib.ensemble import validate_submission
from lib.metrics import log_loss
from lib.predict import fit_blend, predict_run, tta_predictions, write_ensemble
from lib.runs import find_runs

CLASSES = ["영", "일", "칠 번"]  # a space and Hangul, as in real competitions


# ---------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny forward passes: one thread is fastest and does not stall on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _oof(y, probs, ids=None, fold=0):
    y = np.asarray(y)
    df = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=CLASSES)
    df.insert(0, "target", y)
    df.insert(0, "fold", fold)
    df.insert(0, "id", ids if ids is not None else [f"img{i:03d}" for i in range(len(y))])
    return df


def _onehot(pred, conf=0.8):
    p = np.full((len(pred), 3), (1 - conf) / 2)
    p[np.arange(len(pred)), pred] = conf
    return p


@pytest.fixture(scope="module")
def comp(tmp_path_factory):
    """A 3-class competition of 16 px digit scans: 12 train images per class (PNG), 6 test images
    made left-right symmetric (so hflip leaves them unchanged), 2 folds."""
    root = tmp_path_factory.mktemp("digits")
    d = load_digits()
    rng = np.random.default_rng(0)

    def save(img, path):
        a = np.kron((img * 255 / 16).round().astype(np.uint8), np.ones((2, 2), np.uint8))
        Image.fromarray(np.repeat(a[..., None], 3, axis=2)).save(path)

    for name, digit in zip(CLASSES, (0, 1, 7)):
        (root / "train" / name).mkdir(parents=True)
        for k, i in enumerate(rng.choice(np.flatnonzero(d.target == digit), 12, replace=False)):
            save(d.images[i], root / "train" / name / f"{name[0]}{k:02d}.png")
    (root / "test").mkdir()
    ids = [f"T{k}" for k in range(6)]
    for k, i in enumerate(rng.choice(len(d.images), 6, replace=False)):
        save(np.maximum(d.images[i], d.images[i][:, ::-1]), root / "test" / f"{ids[k]}.png")
    sample = pd.DataFrame(np.full((6, 3), 1 / 3), columns=CLASSES)
    sample.insert(0, "ID", ids[::-1])  # sample order differs from file order
    sample.to_csv(root / "sample_submission.csv", index=False)
    c = scan_competition(root, verbose=False)
    make_folds(c, n_folds=2)
    return c


@pytest.fixture(scope="module")
def run_dir(comp, tmp_path_factory):
    """A completed fold-0 run of test_resnet (random weights) with shuffled oof.csv rows."""
    d = tmp_path_factory.mktemp("runs") / "tiny_f0"
    d.mkdir()
    params = {"data_dir": str(comp.root), "backbone": "test_resnet", "fold": 0, "n_folds": 2,
              "img_size": 16, "batch_size": 4, "pool": "avg", "cache": False, "run_name": "tiny_f0"}
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    torch.manual_seed(0)
    model, _ = create_backbone("test_resnet", 3)
    save_weights(model, d / "model.safetensors")
    folds = pd.read_csv(comp.root / "folds.csv", dtype={"id": str}).merge(comp.train, on="id")
    va = folds[folds["fold"] == 0].sample(frac=1, random_state=1)
    _oof(va["target"], np.full((len(va), 3), 1 / 3), ids=va["id"].to_numpy()).to_csv(d / "oof.csv", index=False)
    test = pd.DataFrame(np.full((6, 3), 1 / 3), columns=CLASSES)
    test.insert(0, "id", comp.test["id"].to_numpy())
    test.to_csv(d / "test.csv", index=False)
    (d / "metrics.json").write_text(json.dumps({"complete": True, "log_loss": 1.1, "accuracy": 0.3,
                                               "f1_macro": 0.2, "best_epoch": 0, "minutes": 0.1}))
    return d


def _write_run(runs_dir, name, fold, oof, lr=1e-3, complete=True):
    d = runs_dir / name
    d.mkdir(parents=True)
    (d / "params.yaml").write_text(yaml.safe_dump({"data_dir": "data/x", "backbone": name.split("_f")[0],
                                                   "fold": fold, "lr": lr, "run_name": name}))
    y, p = analysis.oof_arrays(oof, CLASSES)
    (d / "metrics.json").write_text(json.dumps({"complete": complete, "log_loss": log_loss(y, p),
                                               "accuracy": 0.5, "f1_macro": 0.5, "best_epoch": 2, "minutes": 1.5}))
    oof.to_csv(d / "oof.csv", index=False)


# ---------------------------------------------------------------- confusions, losses, leaderboard

def test_confusion_pairs_count_both_directions(tmp_path):
    y = np.repeat([0, 1, 2], 10)
    pred = y.copy()
    pred[:4] = 1       # 4 x class 0 -> 1
    pred[10] = 0       # 1 x class 1 -> 0
    pred[20:22] = 0    # 2 x class 2 -> 0
    cm = analysis.confusion_table(_oof(y, _onehot(pred)), CLASSES, save=tmp_path / "cm.csv")
    assert cm.loc["영", "일"] == 4 and cm.loc["일", "영"] == 1 and cm.loc["영", "영"] == 6
    assert cm.to_numpy().sum() == 30
    back = pd.read_csv(tmp_path / "cm.csv", index_col=0)
    assert np.array_equal(back.to_numpy(), cm.to_numpy()) and list(back.columns) == CLASSES

    pairs = analysis.confusion_pairs(cm)
    assert len(pairs) == 2  # 일 <-> 칠 번 never confused
    first = pairs.iloc[0]
    assert (first["true"], first["predicted"], first["count"], first["reverse"], first["total"]) == ("영", "일", 4, 1, 5)
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
    losses = analysis.top_losses(_oof(y, probs), CLASSES)
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
    full = _oof(y, probs, ids)
    full["fold"] = folds
    for f in range(3):
        _write_run(tmp_path, f"beta_f{f}", f, full[full["fold"] == f], lr=1e-3)
    for f in range(2):  # alpha lacks fold 2
        _write_run(tmp_path, f"alpha_f{f}", f, full[full["fold"] == f], lr=3e-3)
    _write_run(tmp_path, "gamma_f0", 0, full[full["fold"] == 0], complete=False)

    with pytest.warns(UserWarning) as rec:
        runs, oofs = analysis.load_runs(tmp_path, CLASSES, n_folds=3)
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
    best = "alpha" if cv.loc["alpha", "log_loss"] < cv.loc["beta", "log_loss"] else "beta"
    assert analysis.focus_model(lb) == best and analysis.focus_model(lb, "beta") == "beta"
    with pytest.raises(ValueError, match="focus='gamma' is not a loaded model"):
        analysis.focus_model(lb, "gamma")

    with pytest.raises(ValueError, match=r"models \['nope'\] have no run folder"):
        analysis.load_runs(tmp_path, CLASSES, models=["nope"])


def test_model_disagreement_counts_and_gain():
    y = np.array([0, 1, 2, 0, 1, 2])
    a = _oof(y, _onehot([0, 1, 2, 1, 1, 2], 0.8))  # wrong on row 3, more confident
    b = _oof(y, _onehot([0, 1, 0, 0, 1, 2], 0.6))  # wrong on row 2
    t = analysis.model_disagreement({"a": a, "b": b}, CLASSES).iloc[0]
    assert (t["disagree"], t["a_right"], t["b_right"], t["neither_right"]) == (2, 1, 1, 0)
    assert t["log_loss_blend"] < min(t["log_loss_a"], t["log_loss_b"]) and t["gain"] > 0
    assert t["accuracy_blend"] == pytest.approx(5 / 6)  # the more confident model wins both disagreements


# ---------------------------------------------------------------- galleries and figures

def test_galleries_return_figures_and_read_only_shown_images(comp, monkeypatch):
    y = comp.train["target"].to_numpy()
    pred = y.copy()
    pred[np.flatnonzero(y == 0)[:3]] = 1  # three 영 predicted as 일
    oof = _oof(y, _onehot(pred), ids=comp.train["id"].to_numpy())
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


# ---------------------------------------------------------------- TTA re-prediction and the blend

def test_predict_run_matches_direct_forward_and_keeps_row_order(comp, run_dir):
    out = predict_run(run_dir, ["identity"], split="test")
    ref = pd.read_csv(run_dir / "test.csv", dtype={"id": str})
    assert list(out.columns) == ["id"] + CLASSES and list(out["id"]) == list(ref["id"])
    assert np.allclose(out[CLASSES].sum(axis=1), 1)
    model, cfg = create_backbone("test_resnet", 3)
    from lib.backbones import load_weights
    load_weights(model, run_dir / "model.safetensors").eval()
    tfm = get_augment("none", 16, cfg["mean"], cfg["std"])
    x = torch.stack([tfm(image=load_resized(p, 16))["image"] for p in comp.test.set_index("id").loc[ref["id"], "path"]])
    with torch.no_grad():
        want = torch.softmax(model(x), dim=1).double().numpy()
    assert np.allclose(out[CLASSES].to_numpy(), want, atol=1e-6)

    oof = predict_run(run_dir, ["identity"], split="oof")
    ref = pd.read_csv(run_dir / "oof.csv", dtype={"id": str})
    assert list(oof["id"]) == list(ref["id"]) and list(oof["target"]) == list(ref["target"])
    assert (oof["fold"] == 0).all()
    with pytest.raises(ValueError, match="unknown TTA op 'flip'"):
        predict_run(run_dir, ["flip"])


def test_predict_run_hflip(run_dir):
    # symmetric test images: flipping changes nothing, so identity+hflip == identity
    runs = find_runs(run_dir.parent)
    tests, oofs = tta_predictions(runs, CLASSES, ["identity", "hflip"], oof=True)
    plain = predict_run(run_dir, ["identity"], split="test")[CLASSES].to_numpy()
    assert np.allclose(tests["tiny"][CLASSES].to_numpy(), plain, atol=1e-6)
    # ordinary train images: identity+hflip is the mean of the two single-op predictions
    a = predict_run(run_dir, ["identity"], split="oof")
    b = predict_run(run_dir, ["hflip"], split="oof")[CLASSES].to_numpy()
    ab = oofs["tiny"].set_index("id").loc[a["id"], CLASSES].to_numpy()  # tta_predictions sorts by id
    a = a[CLASSES].to_numpy()
    assert not np.allclose(a, b, atol=1e-4)
    assert np.allclose(ab, (a + b) / 2, atol=1e-6)
    assert oofs["tiny"]["id"].is_monotonic_increasing and len(oofs["tiny"]) == len(a)
    tests, oofs = tta_predictions(runs, CLASSES, ["identity"], oof=True)  # plain: the run's test.csv
    assert oofs is None and np.allclose(tests["tiny"][CLASSES].to_numpy(), 1 / 3)


def test_fit_blend_and_write_ensemble(comp, tmp_path):
    rng = np.random.default_rng(0)
    y = comp.train["target"].to_numpy()
    ids = comp.train["id"].to_numpy()
    good = 0.6 * np.eye(3)[y] + 0.4 * rng.dirichlet(np.ones(3), size=len(y))
    noise = rng.dirichlet(np.ones(3), size=len(y))
    oofs = {"good": _oof(y, good, ids), "noise": _oof(y, noise, ids).iloc[3:]}  # noise lacks 3 ids
    with pytest.warns(UserWarning, match="share"):
        b = fit_blend(oofs, CLASSES)
    assert len(b.ids) == len(y) - 3 and b.weights.sum() == pytest.approx(1)
    assert b.weights[0] > b.weights[1]
    rep = b.report.set_index("model")
    assert list(b.report["model"])[-1] == "calibrated_blend"
    assert rep.loc["calibrated_blend", "log_loss"] <= rep.loc["fitted_blend", "log_loss"] + 1e-12
    assert rep.loc["fitted_blend", "log_loss"] <= rep.loc["good", "log_loss"] + 1e-9

    test_ids = comp.test["id"].to_numpy()
    tests = {m: pd.concat([pd.DataFrame({"id": test_ids}),
                           pd.DataFrame(rng.dirichlet(np.ones(3), size=6), columns=CLASSES)], axis=1)
             for m in ("good", "noise")}
    sub = write_ensemble(b, tests, comp, tmp_path, tmp_path / "submission.csv")
    written = pd.read_csv(tmp_path / "submission.csv", dtype={"ID": str})
    validate_submission(written, comp.sample_submission)
    assert list(written["ID"]) == list(comp.sample_submission["ID"]) and written.shape == sub.shape
    rep = pd.read_csv(tmp_path / "ensemble" / "blend_report.csv")
    assert list(rep.columns) == ["model", "weights", "log_loss", "accuracy", "f1_macro"]
    oof_blend = pd.read_csv(tmp_path / "ensemble" / "oof_blend.csv", dtype={"id": str})
    assert list(oof_blend.columns) == ["id", "target"] + CLASSES and len(oof_blend) == len(b.ids)
    assert log_loss(oof_blend["target"], oof_blend[CLASSES]) == pytest.approx(rep["log_loss"].iloc[-1])
    for m in ("good", "noise"):  # each single model as a submission, for the leaderboard comparison
        single = pd.read_csv(tmp_path / "ensemble" / f"test_{m}.csv", dtype={"ID": str})
        validate_submission(single, comp.sample_submission)
        want = tests[m].set_index("id").loc[single["ID"], CLASSES].to_numpy()
        assert np.allclose(single[CLASSES].to_numpy(), want / want.sum(axis=1, keepdims=True))

    del tests["noise"]
    with pytest.raises(ValueError, match="no test predictions for models \\['noise'\\]"):
        write_ensemble(b, tests, comp, tmp_path, tmp_path / "submission.csv")
