import io
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from lib import eda, eda_plots, viz
from lib.data import scan_competition

CLASSES = ["고양이", "로켓", "커피 잔"]


def _tiles() -> list[np.ndarray]:
    """160x120 RGB tiles (a 4x4 grid) of the real photos scikit-learn and scikit-image ship."""
    import skimage.data as sd
    from sklearn.datasets import load_sample_images
    srcs = list(load_sample_images().images)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
                 "stereo_motorcycle"):  # not "cat": it is chelsea again
        a = getattr(sd, name)()
        srcs.append((a[0] if isinstance(a, tuple) else a)[..., :3])
    tiles = []
    for s in srcs:
        a = np.asarray(Image.fromarray(s).resize((640, 480), Image.BILINEAR))
        tiles += [a[y:y + 120, x:x + 160] for y in range(0, 480, 120) for x in range(0, 640, 160)]
    return [t for t in tiles if t.std() > 25]


def _jpeg(a: np.ndarray, path, quality=90) -> None:
    Image.fromarray(a).save(path, format="JPEG", quality=quality)


def _near(path_in, path_out, scale, quality, brightness=1.0) -> None:
    """Another encoding of the same picture: resized, re-compressed, a little brighter."""
    im = Image.open(path_in)
    im = im.resize((int(im.width * scale), int(im.height * scale)), Image.BILINEAR)
    ImageEnhance.Brightness(im).enhance(brightness).save(path_out, format="JPEG", quality=quality)


def _shifted(a: np.ndarray, rng) -> np.ndarray:
    """The document-competition test set: rotated a quarter turn, noisy, colour-shifted."""
    a = np.rot90(a).astype(np.float32) * np.array([1.3, 1.0, 0.7]) + rng.normal(0, 20, (a.shape[1], a.shape[0], 3))
    return np.clip(a, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    """Two competitions with the same train set: test shifted (+ planted duplicates) or drawn like train."""
    tiles = _tiles()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(tiles))
    assert len(order) >= 100, "not enough distinct tiles in the sample photos"
    train, test = order[:60], order[60:100]
    roots = {k: tmp_path_factory.mktemp(k) for k in ("shifted", "like")}
    for root in roots.values():
        for c in CLASSES:
            (root / "train" / c).mkdir(parents=True)
        (root / "test").mkdir()
        for k, t in enumerate(train):
            _jpeg(tiles[t], root / "train" / CLASSES[k % 3] / f"tr{k:03d}.jpg")
    for k, t in enumerate(test):
        _jpeg(_shifted(tiles[t], rng), roots["shifted"] / "test" / f"te{k:03d}.jpg")
        _jpeg(tiles[t], roots["like"] / "test" / f"te{k:03d}.jpg")
    r = roots["shifted"]
    tr = lambda k: r / "train" / CLASSES[k % 3] / f"tr{k:03d}.jpg"  # noqa: E731
    planted = {  # id -> the train id it copies
        "dup_exact": "tr000", "dup_conflict": "tr003", "dup_near": "tr006",
        "leak_exact": "tr009", "leak_near": "tr012", "leak_rot": "tr015"}
    (r / "train" / CLASSES[0] / "dup_exact.jpg").write_bytes(tr(0).read_bytes())      # same class, same bytes
    (r / "train" / CLASSES[1] / "dup_conflict.jpg").write_bytes(tr(3).read_bytes())   # tr003 is class 0
    _near(tr(6), r / "train" / CLASSES[0] / "dup_near.jpg", 1.25, 70, 1.1)
    (r / "test" / "leak_exact.jpg").write_bytes(tr(9).read_bytes())
    _near(tr(12), r / "test" / "leak_near.jpg", 0.9, 80)
    Image.open(tr(15)).transpose(Image.Transpose.ROTATE_90).save(r / "test" / "leak_rot.jpg", quality=90)
    good = tr(18).read_bytes()
    (r / "train" / CLASSES[2] / "broken.jpg").write_bytes(good[: len(good) // 3])     # truncated
    return {k: scan_competition(v, verbose=False) for k, v in roots.items()}, planted


def test_finds_every_planted_duplicate_conflict_and_leak(comps):
    c, planted = comps[0]["shifted"], comps[1]
    stats = eda.image_stats(c, workers=1)
    dups = eda.find_duplicates(c, stats)
    found = {frozenset(p) for p in zip(dups["id"], dups["dup_of"])}
    assert found == {frozenset(p) for p in planted.items()}  # every planted copy with its source, nothing else
    kind = {i: k for p, k in zip(zip(dups["id"], dups["dup_of"]), dups["kind"]) for i in p}
    assert [kind[i] for i in ("dup_exact", "dup_conflict", "leak_exact")] == ["exact"] * 3
    assert [kind[i] for i in ("dup_near", "leak_near", "leak_rot")] == ["near"] * 3
    assert set(dups.loc[dups["split"] == "test", "id"]) == {"leak_exact", "leak_near", "leak_rot"}
    conflicts = pd.read_csv(c.root / "eda" / "conflicts.csv", dtype=str)
    assert set(conflicts["id"]) == {"dup_conflict", "tr003"}
    assert conflicts["labels"].nunique() == 1 and " | " in conflicts["labels"][0]


def test_hamming_pairs_matches_brute_force():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2**63, 300, dtype=np.uint64)
    a[50:60] = a[0] ^ np.uint64(0b1011)  # 3 bits from a[0]
    i, j, d = eda.hamming_pairs(a, max_distance=3, block=37)
    full = np.array([[bin(int(x) ^ int(y)).count("1") for y in a] for x in a])
    want = {(x, y) for x, y in zip(*np.nonzero(full <= 3)) if x < y}
    assert set(zip(i.tolist(), j.tolist())) == want and (d == full[i, j]).all()
    i, j, d = eda.hamming_pairs(a[:100], a[40:], max_distance=3)
    assert set(zip(i.tolist(), j.tolist())) == set(zip(*np.nonzero(full[:100, 40:] <= 3)))
    assert (d == full[i, j + 40]).all()


def test_flags_a_rotated_noisy_test_set_and_not_a_like_one(comps):
    (cs, cl) = comps[0]["shifted"], comps[0]["like"]
    shifted = eda.shift_scores(cs, eda.image_stats(cs, workers=1)).set_index("stat")
    like = eda.shift_scores(cl, eda.image_stats(cl, workers=1)).set_index("stat")
    flagged = set(shifted.index[shifted["flagged"]])
    assert {"aspect", "orientation", "noise", "colourfulness", "edge_ratio", "adversarial"} <= flagged
    assert shifted.loc["adversarial", "score"] > 0.9
    assert not like["flagged"].any(), like[like["flagged"]]
    assert like.loc["adversarial", "score"] < 0.7
    assert shifted.loc["aspect", "score"] > 0.8 and like.loc["aspect", "score"] < 0.2


def test_writes_csvs_with_ids_and_reuses_the_cache(comps):
    c = comps[0]["shifted"]
    stats = eda.image_stats(c, workers=1)
    eda.find_duplicates(c, stats), eda.shift_scores(c, stats, adversarial=False)
    bad = eda.bad_files(c, stats)
    assert "broken" in set(bad["id"]) and bad.loc[bad["id"] == "broken", "problem"].str.contains("decode").all()
    for name in ("image_stats", "shift", "duplicates", "conflicts", "bad_files"):
        df = pd.read_csv(c.root / "eda" / f"{name}.csv")
        assert "id" in df.columns and len(df), name
    csv = c.root / "eda" / "image_stats.csv"
    before = os.stat(csv).st_mtime_ns
    again = eda.image_stats(c, workers=1)
    assert os.stat(csv).st_mtime_ns == before  # nothing recomputed, nothing rewritten
    pd.testing.assert_frame_equal(again.reset_index(drop=True), stats.reset_index(drop=True), check_dtype=False)
    assert stats["problem"].eq("").all() and len(stats) == len(c.train) + len(c.test)
    sub = eda.image_stats(c, max_images=10, workers=1)
    assert (sub["split"].value_counts() == 10).all()


def test_class_table_and_plots_draw_without_glyph_warnings(comps):
    import matplotlib
    import matplotlib.pyplot
    matplotlib.use("Agg")
    c = comps[0]["shifted"]
    t = eda.class_table(c, n_folds=25)
    assert t["name"].tolist() == CLASSES and t["count"].sum() == len(c.train)
    assert t["fewer_than_folds"].tolist() == [True, True, True]
    assert viz.plot_labels(["a b", "\U0010fffd"]) == ["a b", "#1"]  # no font has that code point
    stats = eda.image_stats(c, workers=1)
    dups = eda.find_duplicates(c, stats, save=False)

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
         lambda: eda_plots.plot_shift(stats, eda.shift_scores(c, stats, adversarial=False, save=False)))
    with pytest.MonkeyPatch.context() as mp:  # a machine without any Hangul font: classes by index
        mp.setattr(viz, "_covered", lambda: frozenset(range(128)))
        mp.setattr(viz, "_font_for", lambda need: None)
        assert viz.plot_labels(c.classes) == ["#0", "#1", "#2"]
        draw(*with_names)
    with pytest.raises(KeyError, match="nope"):
        eda_plots.show_images(c, ids=["nope"])
