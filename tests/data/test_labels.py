"""lib.data.labels: labels tables in the shapes competitions ship, class-name tables, submission kinds."""
from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image

from lib.data.labels import find_images, positive_class, read_class_names, read_labels_table, submission_kind


def _img(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (90, 20, 200)).save(path)


@pytest.mark.parametrize("layout", ["id_with_ext", "id_without_ext", "path_column", "nested"])
def test_labels_table_shapes_are_read_without_arguments(tmp_path, layout):
    root = tmp_path / layout
    names = ["a1", "b2", "c3"]
    for i, n in enumerate(names):
        _img(root / "train" / (f"sub{i % 2}" if layout == "nested" else "") / f"{n}.png")
    table = {"id_with_ext": {"id": [f"{n}.png" for n in names]}, "id_without_ext": {"image_id": names},
             "path_column": {"img_path": [f"train/{n}.png" for n in names]}, "nested": {"id": names}}[layout]
    pd.DataFrame({**table, "label": ["x", "y", "x"]}).to_csv(root / "train.csv", index=False)
    problems = []
    df = read_labels_table(root, root / "train.csv", problems)
    assert not problems and df["label"].tolist() == ["x", "y", "x"]
    assert [p.split("/")[-1] for p in df["path"]] == [f"{n}.png" for n in names]


def test_ambiguous_or_unreadable_tables_name_the_file_and_rows(tmp_path):
    root = tmp_path / "c"
    _img(root / "train" / "a" / "x.png"), _img(root / "train" / "b" / "x.png")
    with pytest.raises(ValueError, match=r"labels.csv: ids \['x'\] match more than one image"):
        find_images(root, "train", ["x"], root / "labels.csv")
    pd.DataFrame({"file_id": ["x"], "what": ["k"]}).to_csv(root / "train.csv", index=False)
    with pytest.raises(ValueError, match=r"train.csv: cannot tell the id/path and label columns among \['file_id', "):
        read_labels_table(root, root / "train.csv", [])
    table = pd.DataFrame({"img_path": ["train/a/x.png", "train/b/x.png"], "label": ["k", " "]})
    table.to_csv(root / "t2.csv", index=False)
    with pytest.raises(ValueError, match=r"t2.csv: column 'label' is empty on lines \[3\]"):
        read_labels_table(root, root / "t2.csv", [])


def test_class_names_table_and_submission_kinds(tmp_path):
    assert read_class_names(tmp_path) is None
    pd.DataFrame({"target": [0, 1], "class_name": ["계좌번호", "dashboard"]}).to_csv(tmp_path / "meta.csv", index=False)
    path, names = read_class_names(tmp_path)
    assert path.name == "meta.csv" and names == {"0": "계좌번호", "1": "dashboard"}
    assert submission_kind(pd.DataFrame({"ID": ["a"], "target": [0]})) == "label"
    assert submission_kind(pd.DataFrame({"id": ["a"], "label": ["cat"]})) == "label"
    assert submission_kind(pd.DataFrame({"ID": ["a"], "cat": [0.5], "dog": [0.5]})) == "probs"
    assert submission_kind(pd.DataFrame({"ID": ["a"], "p": [0.25]})) == "binary"


def test_one_non_integer_column_is_a_binary_probability_submission_whatever_its_name():
    # id,label filled with 0.5 was read as a label submission: hard 0/1 answers, ~34.5 nats per wrong row
    for col in ("label", "is_iceberg", "target", "p"):
        assert submission_kind(pd.DataFrame({"id": ["a", "b"], col: [0.5, 0.5]})) == "binary", col
    assert submission_kind(pd.DataFrame({"id": ["a", "b"], "label": [0, 0]})) == "label"


def test_positive_class_from_the_column_name_the_labels_or_the_setting(tmp_path):
    sample = tmp_path / "sample_submission.csv"
    assert positive_class(["0", "1"], "label", sample) == 1
    assert positive_class(["False", "True"], "target", sample) == 1
    assert positive_class(["cat", "dog"], "dog", sample) == 1
    assert positive_class(["Dog", "cat"], "dog", sample) == 0
    assert positive_class(["iceberg", "ship"], "is_iceberg", sample, positive="iceberg") == 0
    with pytest.raises(ValueError, match=r"sample_submission.csv.*is_iceberg.*positive_class"):
        positive_class(["iceberg", "ship"], "is_iceberg", sample)
    with pytest.raises(ValueError, match="two-class"):
        positive_class(["a", "b", "c"], "label", sample)
    with pytest.raises(ValueError, match="not one of the classes"):
        positive_class(["a", "b"], "label", sample, positive="c")
