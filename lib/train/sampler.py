"""Which training images an epoch draws: each once (shuffled), or classes drawn more evenly than they occur.

    w = sample_weights(data.train.targets, "balanced")     # float64 [N], or None for "shuffle"
    dl = WeightedDataLoader(data.train, weights=w, bs=64, shuffle=True, drop_last=True)

For long-tailed classes (hundreds of car models, a few seen a handful of times): ``sampler: balanced``
draws every class alike, ``sqrt`` in proportion to the square root of its count (a middle way: the
tail drawn more often, the head less, e.g. 400 : 25 images drawn 80 : 20). An epoch keeps its length,
``len(dataset)`` draws, with replacement, so epochs, schedules and EMA horizons mean what they did;
the draws come from fastai's ``rng``, which ``ReseedEachEpoch`` reseeds from (seed, epoch): a resumed
run draws what an uninterrupted one would. Validation and OOF are untouched (every image once).
"""
from __future__ import annotations

import itertools

import numpy as np
from fastai.data.load import DataLoader

SAMPLERS = {"shuffle": None, "balanced": 0.0, "sqrt": 0.5}  # a class drawn in proportion to count ** power


def sample_weights(targets, sampler: str) -> np.ndarray | None:
    """Each training image's weight, float64 [N] summing to 1, such that class c (of count n_c) is drawn
    with probability n_c ** power / sum_k n_k ** power; None for ``shuffle``. ``targets`` int [N] are the
    hard labels (a pseudo-labelled image counts for its argmax class)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler {sampler!r}: choose one of {sorted(SAMPLERS)}")
    power = SAMPLERS[sampler]
    if power is None:
        return None
    targets = np.asarray(targets, np.int64)
    if len(targets) == 0 or targets.min() < 0:
        raise ValueError("a balanced sampler needs every training image's class (a target >= 0)")
    counts = np.bincount(targets).astype(np.float64)
    w = counts[targets] ** (power - 1.0)
    return w / w.sum()


class WeightedDataLoader(DataLoader):
    """fastai's DataLoader whose shuffled epoch is ``len(dataset)`` indices drawn with replacement by
    ``weights`` (float [N]; None: fastai's plain shuffle, each index once), from its ``rng``."""

    def __init__(self, dataset, weights=None, **kwargs):
        super().__init__(dataset, **kwargs)
        self.cum_weights = None if weights is None else list(itertools.accumulate(float(w) for w in weights))
        if self.cum_weights is not None and len(self.cum_weights) != len(dataset):
            raise ValueError(f"{len(self.cum_weights)} sampling weights for {len(dataset)} images")

    def shuffle_fn(self, idxs):
        if self.cum_weights is None:
            return super().shuffle_fn(idxs)
        return self.rng.choices(range(len(self.cum_weights)), cum_weights=self.cum_weights, k=len(idxs))
