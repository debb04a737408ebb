"""lib.core.io: a write either lands whole or leaves the old file."""
from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from lib.core.io import atomic_path, read_json, write_csv, write_json


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "metrics.json"
    write_json(p, {"complete": True})
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text('{"compl')
            raise RuntimeError("killed mid-write")
    assert read_json(p) == {"complete": True}
    assert [f.name for f in tmp_path.iterdir()] == ["metrics.json"]    # no temporary left behind


def test_files_are_readable_and_utf8(tmp_path):
    p = write_csv(tmp_path / "sub" / "a.csv", pd.DataFrame({"클래스": [1]}))
    assert pd.read_csv(p).columns[0] == "클래스"
    assert os.stat(p).st_mode & 0o044                                # not 0600 like mkstemp's


def test_the_rename_is_flushed_with_its_folder(tmp_path, monkeypatch):
    """A rename is an entry of the folder: after it, the folder is flushed too, or a power cut can bring
    back the old file. Every fsync is let through, and what it flushed is noted (a power cut cannot be
    made here)."""
    flushed, real = [], os.fsync

    def noting(fd):
        st = os.fstat(fd)
        flushed.append(("folder" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        return real(fd)
    monkeypatch.setattr(os, "fsync", noting)
    p = write_json(tmp_path / "sub" / "metrics.json", {"complete": True})
    assert flushed == [("file", p.stat().st_ino), ("folder", p.parent.stat().st_ino)]   # the file, then its folder
