"""lib.predict.teacher: soft targets reach the loss, the fold rule refuses teachers that saw the validation fold,
pseudo-labels by threshold, and fold-safe teacher tables built from real fold runs."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from lib.core.config import TrainConfig
from lib.data.folds import folds_hash
from lib.data.soft_targets import select_pseudo, soften
from lib.insight.viz import show_batch
from lib.ops.teacher import main as teacher_main
from lib.predict.teacher import teacher_table
from lib.train.loop import fit, setup_run, train_fold, write_predictions

TINY = dict(backbone="test_resnet", n_folds=3, img_size=16, batch_size=32, epochs=1, lr=3e-3,
            progress=False, verbose=False, num_workers=0)
TINY["precision"] = "fp32"  # figures that must not depend on whether this CPU has native bf16 (lib.core.precision)


def _classes(comp_dir) -> list[str]:
    return list(pd.read_csv(comp_dir / "sample_submission.csv").columns[1:])


def _table(ids, probs, classes, held_out=None) -> pd.DataFrame:
    df = pd.DataFrame(np.broadcast_to(probs, (len(ids), len(classes))), columns=classes)
    if held_out is not None:
        df.insert(0, "held_out", held_out)
    df.insert(0, "id", list(ids))
    return df


def test_a_student_with_teacher_weight_1_learns_the_teachers_distribution(digits_comp, tmp_path):
    """Every training image's teacher row is q (70% class 0, 30% class 1): with teacher_weight 1 the hard
    labels are gone from the targets, so the student predicts q on any image, not the digit it sees."""
    classes = _classes(digits_comp)
    q = np.zeros(len(classes))
    q[0], q[1] = 0.7, 0.3
    run = setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path / "runs"), **TINY))  # makes folds
    ids = run.folds.loc[run.folds["fold"] != 0, "id"]
    _table(ids, q, classes, held_out=0).to_csv(tmp_path / "teacher.csv", index=False)
    cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path / "runs"), teacher=str(tmp_path / "teacher.csv"),
                      teacher_weight=1.0, run_name="student", **{**TINY, "epochs": 8, "lr": 1e-2})
    run = setup_run(cfg)
    x, target = run.data.train[0]
    assert target.dtype.is_floating_point and np.allclose(target.numpy(), q)
    fit(run)
    write_predictions(run)
    test = pd.read_csv(tmp_path / "runs" / "student" / "test.csv")[classes].to_numpy()
    mean = test.mean(axis=0)
    assert mean[0] + mean[1] > 0.85 and mean[0] > mean[1]            # hard labels would spread ~0.1 per class
    assert abs(mean[0] - 0.7) < 0.15


def test_the_fold_rule_refuses_teachers_that_saw_the_validation_fold(digits_comp, tmp_path):
    """Real fold runs, their own OOF as a distillation teacher (each row's model trained on the other folds),
    04's blended OOF (no fold column), the fold-1 teacher table for student fold 0, a fold-mean test
    prediction as pseudo-labels: all refused. The fold-0 tables are accepted, and a full-data run takes any."""
    runs = tmp_path / "runs"
    dirs = []
    for k in range(3):
        train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(runs), fold=k, **TINY))
        dirs.append(runs / f"test_resnet_f{k}")
    classes = _classes(digits_comp)
    oof = pd.concat([pd.read_csv(d / "oof.csv", dtype={"id": str}) for d in dirs])
    oof.to_csv(tmp_path / "oof.csv", index=False)
    oof.drop(columns="fold").to_csv(tmp_path / "oof_blend.csv", index=False)  # 04's: id, target, classes
    teacher_main(["--runs", *map(str, dirs), "--out", str(tmp_path)])  # python -m lib.ops.teacher: both tables
    train_t, test_t = (pd.read_csv(tmp_path / f"teacher_{s}.csv", dtype={"id": str}) for s in ("train", "test"))
    again = teacher_table(dirs, "train")
    assert list(again["id"]) == list(train_t["id"]) and np.allclose(again[classes], train_t[classes])
    folds = pd.read_csv(digits_comp / "folds.csv", dtype={"id": str})
    for k in range(3):  # teacher fold k predicted exactly its training images, and the test set
        rows = train_t[train_t["held_out"] == k]
        assert sorted(rows["id"]) == sorted(folds.loc[folds["fold"] != k, "id"])
        assert len(test_t[test_t["held_out"] == k]) == 60
    shuffled = folds.copy()                                           # two images trade folds: the runs'
    a, b = folds.index[folds["fold"] == 0][0], folds.index[folds["fold"] == 1][0]   # fold 0 is not this fold 0
    shuffled.loc[[a, b], "fold"] = [1, 0]
    shuffled.to_csv(digits_comp / "folds.csv", index=False)
    try:
        with pytest.raises(ValueError, match="another fold assignment"):
            teacher_table(dirs[:1], "test")
    finally:
        folds.to_csv(digits_comp / "folds.csv", index=False)
    train_t[train_t["held_out"] == 1].to_csv(tmp_path / "fold1.csv", index=False)
    mean = test_t.groupby("id", sort=False)[classes].mean().reset_index()  # the fold mean, like 04's submission
    mean.to_csv(tmp_path / "test_mean.csv", index=False)

    def student(**kw):
        return setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path / "s"), force=True, **TINY, **kw))
    for table in ("oof.csv", "oof_blend.csv", "fold1.csv"):
        with pytest.raises(ValueError, match="refused by the fold rule"):
            student(teacher=str(tmp_path / table))
    with pytest.raises(ValueError, match="refused by the fold rule"):
        student(pseudo_labels=str(tmp_path / "test_mean.csv"))
    run = student(teacher=str(tmp_path / "teacher_train.csv"), pseudo_labels=str(tmp_path / "teacher_test.csv"))
    assert len(run.data.train) == len(run.data.train_rows) + 60
    fold1 = student(teacher=str(tmp_path / "fold1.csv"), fold=1)       # fold 1's own teacher: fine
    assert fold1.data.train.soft is not None
    full = student(teacher=str(tmp_path / "oof.csv"), pseudo_labels=str(tmp_path / "test_mean.csv"), full_data=True)
    assert len(full.data.train) == 200 + 60                          # no validation fold, no rule to break


def test_a_teacher_table_made_before_a_re_split_is_refused(digits_comp, tmp_path):
    """teacher_table records the hash of the folds.csv its runs trained on; after a re-split (two images trade
    folds 0 and 1) "held_out 0" is another fold 0, whose images the teacher trained on: student fold 0 refuses
    both tables, naming the table and saying to rebuild it. Before the re-split it takes them; a full-data
    student (no validation fold) takes them after it."""
    runs = tmp_path / "runs"
    train_fold(TrainConfig(data_dir=str(digits_comp), runs_dir=str(runs), fold=0, max_samples=32, **TINY))
    tables = {"teacher": tmp_path / "teacher_train.csv", "pseudo_labels": tmp_path / "teacher_test.csv"}
    teacher_table([runs / "test_resnet_f0"], "train", tables["teacher"])
    teacher_table([runs / "test_resnet_f0"], "test", tables["pseudo_labels"])
    folds = pd.read_csv(digits_comp / "folds.csv", dtype={"id": str})
    for path in tables.values():
        assert set(pd.read_csv(path, dtype={"folds_sha1": str})["folds_sha1"]) == {folds_hash(folds)}

    def student(**kw):
        return setup_run(TrainConfig(data_dir=str(digits_comp), runs_dir=str(tmp_path / "s"), force=True, **TINY, **kw))
    assert student(**{k: str(v) for k, v in tables.items()}).data.train.soft is not None
    shuffled = folds.copy()
    a, b = folds.index[folds["fold"] == 0][0], folds.index[folds["fold"] == 1][0]
    shuffled.loc[[a, b], "fold"] = [1, 0]
    shuffled.to_csv(digits_comp / "folds.csv", index=False)
    for key, path in tables.items():
        with pytest.raises(ValueError, match=rf"teacher table {path} was made by fold runs trained on another fold "
                                             r"assignment .* rebuild the teacher table after re-splitting"):
            student(**{key: str(path)})
    assert len(student(pseudo_labels=str(tables["pseudo_labels"]), full_data=True).data.train) == 200 + 60


def test_pseudo_labels_by_threshold_hard_or_all_soft(digits_comp, tmp_path):
    classes = _classes(digits_comp)
    test_ids = pd.read_csv(digits_comp / "sample_submission.csv", dtype={"ID": str})["ID"]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(len(classes), 0.3), size=len(test_ids))
    _table(test_ids, probs, classes, held_out=0).to_csv(tmp_path / "pseudo.csv", index=False)
    keep, targets = select_pseudo(probs, 0.6)
    assert np.array_equal(keep, probs.max(axis=1) >= 0.6) and 0 < keep.sum() < len(keep)
    assert np.array_equal(targets, np.eye(len(classes))[probs[keep].argmax(axis=1)])
    keep, targets = select_pseudo(probs, None, temperature=2.0)
    assert keep.all() and np.allclose(targets, soften(probs, 2.0))
    assert np.allclose(soften(probs, 2.0), np.sqrt(probs) / np.sqrt(probs).sum(axis=1, keepdims=True))

    base = dict(data_dir=str(digits_comp), runs_dir=str(tmp_path / "runs"), pseudo_labels=str(tmp_path / "pseudo.csv"),
                force=True, **TINY)
    hard = setup_run(TrainConfig(pseudo_threshold=0.6, **base))
    n = len(hard.data.train_rows)
    kept = probs.max(axis=1) >= 0.6
    assert len(hard.data.train) == n + kept.sum() and hard.data.train.soft is None   # hard labels only: ints
    assert np.array_equal(hard.data.train.targets[n:], probs[kept].argmax(axis=1))
    assert hard.data.train[n][1].dtype.is_floating_point is False
    soft = setup_run(TrainConfig(pseudo_threshold=None, teacher_temperature=2.0, **base))
    assert len(soft.data.train) == n + len(test_ids)
    assert np.allclose(soft.data.train[n + 3][1].numpy(), soften(probs, 2.0)[3], atol=1e-6)
    plt.close(show_batch(soft.data.train, classes, n=4))              # 02 shows soft-target batches by argmax
    y = soft.data.train_rows["target"].to_numpy()
    assert np.array_equal(soft.data.train.soft[:n].argmax(axis=1), y)  # train images: their one-hot labels
    with pytest.raises(ValueError, match="keeps no test image"):
        setup_run(TrainConfig(pseudo_threshold=1.0, **base))


def test_bad_teacher_settings_say_what_to_do():
    with pytest.raises(ValueError) as e:
        TrainConfig(teacher_weight=1.5, teacher_temperature=0, pseudo_threshold=0.9)
    msg = str(e.value)
    assert "teacher_weight 1.5" in msg and "teacher_temperature 0" in msg and "without pseudo_labels" in msg
    with pytest.raises(ValueError, match="teacher_weight 0 is never used"):
        TrainConfig(teacher="t.csv", teacher_weight=0.0)
    assert "no such teacher table" in TrainConfig(teacher="nope.csv").missing_files()[0]
