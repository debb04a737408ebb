"""lib.insight.duplicates: planted exact/near duplicates, label conflicts and leaks; hamming_pairs."""
import numpy as np
import pandas as pd

from lib.insight import duplicates, image_stats


def test_finds_every_planted_duplicate_conflict_and_leak(comps):
    c, planted = comps[0]["shifted"], comps[1]
    stats = image_stats.image_stats(c, workers=1)
    dups = duplicates.find_duplicates(c, stats)
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
    i, j, d = duplicates.hamming_pairs(a, max_distance=3, block=37)
    full = np.array([[bin(int(x) ^ int(y)).count("1") for y in a] for x in a])
    want = {(x, y) for x, y in zip(*np.nonzero(full <= 3)) if x < y}
    assert set(zip(i.tolist(), j.tolist())) == want and (d == full[i, j]).all()
    i, j, d = duplicates.hamming_pairs(a[:100], a[40:], max_distance=3)
    assert set(zip(i.tolist(), j.tolist())) == set(zip(*np.nonzero(full[:100, 40:] <= 3)))
    assert (d == full[i, j + 40]).all()
