"""lib.train.sampler: on a long-tailed training table, ``balanced`` draws the classes alike and ``sqrt`` by the
square root of their counts, epochs keep their length, and data-parallel ranks share one epoch's draws."""
from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from lib.core.config import TrainConfig
from lib.train.distributed import ShardedDataLoader
from lib.train.loop import setup_run
from lib.train.sampler import WeightedDataLoader, sample_weights


def _long_tailed(comp, tmp_path) -> str:
    """exclude_ids that leave class k of the digits demo with about 1 / (k + 1) of its images."""
    labels = pd.concat([pd.DataFrame({"id": [f.stem for f in sorted(d.glob("*.jpg"))], "k": k})
                        for k, d in enumerate(sorted((comp / "train").iterdir()))])
    drop = labels.groupby("k", group_keys=False).apply(lambda g: g.iloc[: len(g) - max(2, len(g) // (g.name + 1))])
    path = tmp_path / "long_tail.csv"
    drop[["id"]].to_csv(path, index=False)
    return str(path)


def _class_shares(dl, targets, epochs: int) -> np.ndarray:
    """[C] share of each class among the indices ``dl`` draws over ``epochs`` reseeded epochs."""
    drawn = []
    for e in range(epochs):
        dl.rng = random.Random(e)  # as ReseedEachEpoch does
        drawn += list(dl.get_idxs())
    return np.bincount(targets[drawn], minlength=10) / len(drawn)


def test_balanced_and_sqrt_samplers_even_out_a_long_tail(digits_comp, tmp_path):
    base = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path), backbone="test_resnet", img_size=16,
                       n_folds=3, batch_size=8, exclude_ids=_long_tailed(digits_comp, tmp_path), progress=False,
                       verbose=False, num_workers=0, precision="fp32")
    loaders = {s: setup_run(base.replace(sampler=s, run_name=s)).learn.dls.train
               for s in ("shuffle", "balanced", "sqrt")}
    targets = loaders["shuffle"].dataset.targets
    counts = np.bincount(targets, minlength=10)
    assert counts.max() >= 5 * counts.min()                                     # a long tail
    assert type(loaders["shuffle"]) is WeightedDataLoader and loaders["shuffle"].cum_weights is None
    shuffled = _class_shares(loaders["shuffle"], targets, 1)
    np.testing.assert_allclose(shuffled, counts / counts.sum())                 # each image once
    balanced = _class_shares(loaders["balanced"], targets, 200)
    np.testing.assert_allclose(balanced, 0.1, atol=0.015)                       # ~uniform over the classes
    sqrt = _class_shares(loaders["sqrt"], targets, 200)
    np.testing.assert_allclose(sqrt, np.sqrt(counts) / np.sqrt(counts).sum(), atol=0.015)
    for dl in loaders.values():                                                 # epochs keep their length
        assert len(dl) == len(targets) // 8 and len(list(dl.get_idxs())) == len(targets)
    xb, yb = next(iter(loaders["balanced"]))                                    # and serve real batches
    assert tuple(xb.shape) == (8, 3, 16, 16) and len(yb) == 8


def test_weights_follow_class_counts_and_ranks_split_one_draw():
    y = np.array([0] * 8 + [1] * 2)
    w = sample_weights(y, "balanced")
    assert w.sum() == pytest.approx(1) and w[y == 0].sum() == pytest.approx(w[y == 1].sum())
    assert sample_weights(y, "sqrt")[y == 0].sum() == pytest.approx(2 / 3)     # sqrt(8) : sqrt(2) = 2 : 1
    assert sample_weights(y, "shuffle") is None
    with pytest.raises(ValueError, match="every training image's class"):
        sample_weights(np.array([0, -1]), "balanced")
    data = list(range(10))
    whole = WeightedDataLoader(data, weights=w, bs=2, shuffle=True)
    ranks = [ShardedDataLoader(data, rank=r, world=2, weights=w, bs=1, shuffle=True) for r in (0, 1)]
    for dl in (whole, *ranks):
        dl.rng = random.Random(7)
    drawn = list(whole.get_idxs())
    assert [list(dl.get_idxs()) for dl in ranks] == [drawn[0::2], drawn[1::2]]
