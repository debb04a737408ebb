"""lib.data.dataset: the pre-resized cache (build, reuse, resume, rebuild) and ImageDataset's seeding."""
from __future__ import annotations

import numpy as np
import pytest

from lib.data.augment import get_augment
from lib.data.competition import scan_competition
from lib.data.dataset import CHUNK, ImageDataset, build_cache, load_resized


@pytest.fixture()
def comp(digits_comp):
    return scan_competition(digits_comp, verbose=False)


def test_cache_matches_decoding_and_is_reused(comp, tmp_path):
    paths = comp.train["path"].tolist()
    arr = build_cache(paths, 20, tmp_path, "train", workers=1, progress=False)
    assert arr.shape == (len(paths), 20, 20, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[7], load_resized(paths[7], 20))
    mtime = (tmp_path / "20px" / "train.u8").stat().st_mtime_ns
    again = build_cache(paths, 20, tmp_path, "train", workers=1, progress=False)
    assert (tmp_path / "20px" / "train.u8").stat().st_mtime_ns == mtime and np.array_equal(arr, again)
    other = build_cache(paths, 24, tmp_path, "train", workers=1, progress=False)   # another size: its own
    assert other.shape[1] == 24 and (tmp_path / "20px" / "train.json").exists()
    fewer = build_cache(paths[:-3], 20, tmp_path, "train", workers=1, progress=False)  # other files: rebuilt
    assert len(fewer) == len(paths) - 3


def test_interrupted_cache_build_resumes(comp, tmp_path, monkeypatch):
    import lib.data.dataset as D

    paths = (comp.train["path"].tolist() * 6)[: CHUNK + 40]           # two chunks
    calls = []
    real = D._cache_chunk

    def dies_on_second(args):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(D, "_cache_chunk", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        build_cache(paths, 16, tmp_path, "t", workers=1, progress=False)
    assert not (tmp_path / "16px" / "t.json").exists()                # not marked complete
    calls.clear()
    monkeypatch.setattr(D, "_cache_chunk", lambda args: calls.append(args[2]) or real(args))
    arr = build_cache(paths, 16, tmp_path, "t", workers=1, progress=False)
    assert calls == [CHUNK]                                           # only the missing chunk was built
    assert np.array_equal(arr[CHUNK + 5], load_resized(paths[CHUNK + 5], 16))


def test_augmentation_depends_on_seed_epoch_and_index_only(comp, tmp_path):
    paths, y = comp.train["path"].tolist(), comp.train["target"].to_numpy()
    cache = build_cache(paths, 24, tmp_path, "train", workers=1, progress=False)
    tfm = get_augment("heavy", 24)
    a = ImageDataset(paths, y, tfm, 24, cache, seed=1)
    b = ImageDataset(paths, y, get_augment("heavy", 24), 24, None, seed=1)  # decoding path, fresh pipeline
    x0, t0 = a[3]
    assert x0.shape == (3, 24, 24) and int(t0) == y[3]
    for i in (3, 4, 3):
        assert np.allclose(a[i][0], b[i][0], atol=1e-5)               # same (seed, epoch, i): same image
    a.epoch = 1
    assert not np.allclose(a[3][0], x0)                               # the next epoch augments anew
    unlabelled = ImageDataset(paths[:2], None, tfm, 24, cache)
    assert int(unlabelled[0][1]) == -1
    with pytest.raises(ValueError, match="targets"):
        ImageDataset(paths, y[:3])
