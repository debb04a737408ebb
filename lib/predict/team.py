"""Working as a team: other people's predictions as ensemble members beside this machine's runs.

    external = ["shared/kim_probs.csv", {"path": "shared/lee_labels.csv", "weight": 2},
                {"path": "shared/park_run", "name": "park"}]                   # 04's ``external`` parameter
    team = team_blend(oofs, tests, comp, external, runs=runs)   # local models + theirs -> one prediction
    team.members, team.agreement                          # who weighs what; who agrees with whom
    write_team_submission(team, comp, "runs/team_submission.csv", "runs")

A member is a file (or a run folder: its test.csv, and its oof.csv when there is one):
- a probability file: the ID column, then one column per class (the sample's class columns, or a
  run's test.csv); with an OOF file in the kit's format (id, target, one column per class; a fold
  column is not needed) its weight is fitted on OOF together with the local models
  (``lib.predict.crossfit.fit_blend``, as 04's, cross-fitted over the competition's folds.csv by id),
  and the fitted group's test predictions get the test temperature and decision offsets as 04's
  submission does (``lib.predict.calibrate.calibrate_test``; such a member's file stands in for its
  fold models there); without an OOF file it is a finished prediction (a submission, calibrated by
  whoever made it): it enters as it is, untempered, with its given ``weight`` (default 1, the share
  of one member) beside the fitted group, which counts as one member per model it holds;
- a label file: the ID column and one label per row (label values or class identifiers). Only in a
  label competition: the probability blend casts one vote of weight 1, each label file one of its
  ``weight`` (default 1); the class with the most weight wins and a tie goes to the class the blend
  gives the highest probability (so one label file of weight 1 never overrules the blend: give it
  more, or add a second file).
Every file is checked against the competition (IDs of the sample, known classes and labels,
probabilities in [0, 1] summing to 1) and a bad one is refused, naming the file and the fix.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.io import write_csv
from lib.core.metrics import scores
from lib.core.paths import resolve
from lib.core.rundir import RunDir
from lib.data.competition import Competition
from lib.predict.blend import Blend, blend_test
from lib.predict.calibrate import calibrate_test
from lib.predict.crossfit import fit_blend
from lib.predict.submission import make_submission, with_unreadable_rows, write_submission

SPEC_KEYS = ("path", "oof", "weight", "name")


@dataclass
class Member:
    """One prediction of the test set: ``test`` is id + one column per class (kind "probs") or id +
    ``label`` (class index; kind "label"), rows in the competition's test order; ``oof`` (id, fold,
    target + classes) when given; ``weight`` as given (None: fitted on OOF, or 1)."""
    name: str
    kind: str
    source: str
    test: pd.DataFrame
    oof: pd.DataFrame | None = None
    weight: float | None = None

    def labels(self, classes: list[str]) -> np.ndarray:
        """Predicted class index per test row [N]."""
        return self.test["label"].to_numpy(np.int64) if self.kind == "label" else \
            self.test[classes].to_numpy(np.float64).argmax(axis=1)

    def probs(self, classes: list[str]) -> np.ndarray | None:
        return None if self.kind == "label" else self.test[classes].to_numpy(np.float64)


def parse_specs(external) -> list[dict]:
    """04's ``external`` as {path, oof, weight, name} dicts: an entry is a path or such a mapping."""
    specs = []
    for k, e in enumerate([external] if isinstance(external, (str, Path, dict)) else list(external or [])):
        spec = {"path": str(e)} if isinstance(e, (str, Path)) else dict(e)
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if "path" not in spec or unknown:
            raise ValueError(f"external entry {k} ({e!r}): give a path, or a mapping with 'path' and optionally "
                             f"'oof', 'weight', 'name'" + (f" (unknown keys {unknown})" if unknown else ""))
        w = spec.get("weight")
        if w is not None and not (isinstance(w, (int, float)) and w > 0):
            raise ValueError(f"external entry {k} ({spec['path']}): weight {w!r} must be a number > 0")
        specs.append(spec)
    return specs


def read_member(spec, comp: Competition) -> Member:
    """A member from a file or a run folder (``spec``: a path or a ``parse_specs`` dict), checked."""
    spec = parse_specs([spec])[0]
    path = resolve(spec["path"])
    oof_path = spec.get("oof")
    if path.is_dir():
        if not (path / RunDir.TEST).exists():
            raise FileNotFoundError(f"{path}: a run folder needs test.csv (02_train writes it when the run completes)")
        oof_path = oof_path or (path / RunDir.OOF if (path / RunDir.OOF).exists() else None)
        path = path / RunDir.TEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prediction file; give a submission CSV or a run folder")
    name = spec.get("name") or (path.parent.name if path.name == RunDir.TEST else path.stem)
    kind, test = read_prediction(path, comp)
    oof = read_oof(resolve(oof_path), comp) if oof_path else None
    if oof is not None and kind == "label":
        raise ValueError(f"{oof_path}: OOF probabilities go with a probability file, and {path} holds labels; "
                         "drop 'oof' or give their probability file")
    return Member(name, kind, str(path), test, oof, spec.get("weight"))


def read_prediction(path, comp: Competition) -> tuple[str, pd.DataFrame]:
    """("probs", id + classes) or ("label", id + label index) of a prediction file (or of a submission
    DataFrame shaped like the sample), rows in the competition's test order."""
    df = path.copy() if isinstance(path, pd.DataFrame) else pd.read_csv(path, dtype={0: str})
    path = "the submission" if isinstance(path, pd.DataFrame) else path
    df.columns = [str(c) for c in df.columns]
    id_col, rest = df.columns[0], list(df.columns[1:])
    ids = df[id_col].astype(str)
    want = comp.test["id"].astype(str)
    dup = ids[ids.duplicated()]
    missing, extra = sorted(set(want) - set(ids)), sorted(set(ids) - set(want))
    if len(dup) or missing or extra:
        raise ValueError(f"{path}: its IDs ({id_col!r}) do not match the competition's test set: {len(dup)} "
                         f"duplicated {list(dup[:3])}, {len(missing)} missing {missing[:3]}, {len(extra)} unknown "
                         f"{extra[:3]}; was it made for {comp.root}?")
    df = df.set_index(ids).loc[want.to_numpy()]
    if set(rest) == set(comp.classes):
        p = df[comp.classes].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(p) | (p < 0) | (p > 1)
        off = np.abs(p.sum(axis=1) - 1) > 1e-3
        if bad.any() or off.any():
            r = int(np.flatnonzero(bad.any(axis=1) | off)[0])
            raise ValueError(f"{path}: not probabilities (non-numeric, outside [0, 1] or rows not summing to 1), "
                             f"first at ID {want.iloc[r]!r}; export softmax probabilities")
        out = pd.DataFrame(p / p.sum(axis=1, keepdims=True), columns=comp.classes)
        out.insert(0, "id", want.to_numpy())
        return "probs", out
    if len(rest) == 1 and comp.positive is not None:  # a binary submission: P(positive class) per row
        p = pd.to_numeric(df[rest[0]], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(p) | (p < 0) | (p > 1)
        if bad.any():
            raise ValueError(f"{path}: column {rest[0]!r} must hold probabilities in [0, 1]; first bad value at ID "
                             f"{want.iloc[int(np.flatnonzero(bad)[0])]!r}")
        probs = np.zeros((len(p), 2))
        probs[:, comp.positive], probs[:, 1 - comp.positive] = p, 1 - p
        out = pd.DataFrame(probs, columns=comp.classes)
        out.insert(0, "id", want.to_numpy())
        return "probs", out
    if len(rest) == 1:
        return "label", pd.DataFrame({"id": want.to_numpy(), "label": label_index(df[rest[0]], comp, path)})
    raise ValueError(f"{path}: columns {rest[:6]} are neither one label column nor the competition's class "
                     f"columns {comp.classes[:6]}...; give a submission shaped like sample_submission.csv")


def label_index(values: pd.Series, comp: Competition, path) -> np.ndarray:
    """Class indices [N] of label values (the sample's label values or the class identifiers)."""
    lookup = {str(c): i for i, c in enumerate(comp.classes)}
    lookup.update({str(v): i for i, v in enumerate(comp.label_values or [])})
    text = values.astype(str)
    if pd.api.types.is_float_dtype(values) and values.notna().all() and (values % 1 == 0).all():
        text = values.astype(np.int64).astype(str)  # 3.0 -> "3"
    unknown = sorted(set(text) - set(lookup))
    if unknown:
        raise ValueError(f"{path}: labels {unknown[:5]} are not classes of {comp.root} "
                         f"(valid: {list(lookup)[:8]}...)")
    return text.map(lookup).to_numpy(np.int64)


def read_oof(path: Path, comp: Competition) -> pd.DataFrame:
    """An OOF file in the kit's format (id, fold, target + one column per class), sorted by id, checked
    against the competition's training labels."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such OOF file")
    df = pd.read_csv(path, dtype={"id": str})
    missing = [c for c in ["id", "target", *comp.classes] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: an OOF file needs id, fold, target and the class columns; missing {missing[:5]}")
    truth = comp.train.set_index("id")["target"]
    unknown = sorted(set(df["id"]) - set(truth.index))
    if unknown:
        raise ValueError(f"{path}: ids {unknown[:3]} are not training images of {comp.root}")
    wrong = df["target"].to_numpy() != truth.loc[df["id"]].to_numpy()
    if wrong.any():
        raise ValueError(f"{path}: targets differ from the competition's labels for {int(wrong.sum())} ids "
                         f"(e.g. {df.loc[wrong, 'id'].iloc[0]!r}); another class order?")
    if "fold" not in df.columns:
        df.insert(1, "fold", -1)
    return df.sort_values("id").reset_index(drop=True)


@dataclass
class TeamBlend:
    """The team's prediction: ``members`` (one row per member: kind, source, weight in the probability
    blend, vote weight, OOF scores), the OOF-fitted part (``blend``; None when no member has OOF), test
    ``ids`` [N], blended ``probs``
    [N, C], final ``labels`` [N] (after the vote), ``agreement`` (share of test rows on which two
    members predict the same class) and ``overruled`` (rows where the vote changed the blend's class)."""
    members: pd.DataFrame
    blend: Blend | None
    ids: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    agreement: pd.DataFrame
    overruled: int


def team_blend(oofs: dict, tests: dict, comp: Competition, external, metric: str = "log_loss",
               space: str = "prob", temperature: bool = True, decide: bool = True,
               runs: pd.DataFrame | None = None, run_tests: dict | None = None) -> TeamBlend:
    """Blend this machine's models (``oofs``, ``tests``, ``runs``, ``run_tests`` as 04 has them and
    passes them to ``fit_blend`` and ``calibrate_test``) with ``external`` members (see the module
    doc): OOF-fitted weights for every member with OOF, cross-fitted over the competition's folds
    (``competition_folds``), with the test temperature and decision offsets of 04's submission; given
    or equal weights for the others, then the vote of the label files (label competitions). With
    local models ``runs`` is required: the test temperature comes from their fold runs."""
    if oofs and runs is None:
        raise ValueError("team_blend: pass runs= (open_runs' table) with the local models: the test temperature "
                         "is fitted on their fold runs' test predictions, as for 04's submission")
    entries = list(external) if isinstance(external, (list, tuple)) else [external] if external else []
    members = [e if isinstance(e, Member) else read_member(e, comp) for e in entries]
    names = [m.name for m in members]
    clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & set(tests)))
    if clash:
        raise ValueError(f"members named {clash} twice (or like a local model); give each external entry a 'name'")
    labels_ext = [m for m in members if m.kind == "label"]
    if labels_ext and comp.submission != "label":
        raise ValueError(f"{labels_ext[0].source} holds labels, but {comp.root}/sample_submission.csv asks for "
                         "probabilities: a label file cannot be blended there; ask for their probability file")
    fitted = {**oofs, **{m.name: m.oof for m in members if m.kind == "probs" and m.oof is not None and not m.weight}}
    fixed = [m for m in members if m.kind == "probs" and m.name not in fitted]
    if not fitted and not fixed:
        raise ValueError("a team blend needs a probability member (a local run or a probability file): it breaks "
                         "the label votes' ties; compare label files with lib.insight.diffs.diff_submissions")
    # no member with OOF (their files alone, e.g. after a wiped server): no fitted part
    b = fit_blend(competition_folds(fitted, comp), comp.classes, metric, space, temperature, decide,
                  verbose=False) if fitted else None
    all_tests = {**tests, **{m.name: m.test for m in members if m.kind == "probs"}}
    ids = comp.test["id"].to_numpy()
    n_fit = len(b.models) if b else 0
    if b:
        if runs is not None:  # external members with OOF stand in for their own fold models
            given = {m.name: m.test for m in members if m.name in b.models}
            b, _ = calibrate_test(b, all_tests, runs, comp.classes, run_tests, given)
        ids, p_fit = blend_test(b, all_tests, comp.classes)  # test temperature and offsets, as submission.csv
    shares = {m.name: float(m.weight or 1.0) for m in fixed}
    total = n_fit + sum(shares.values())
    probs = n_fit / total * p_fit if b else np.zeros((len(ids), comp.num_classes))
    for m in fixed:
        probs = probs + shares[m.name] / total * m.test.set_index("id").loc[ids, comp.classes].to_numpy(np.float64)
    labels = probs.argmax(axis=1)
    if labels_ext:
        votes = np.zeros_like(probs)
        np.add.at(votes, (np.arange(len(ids)), labels), 1.0)
        for m in labels_ext:
            np.add.at(votes, (np.arange(len(ids)), m.test.set_index("id").loc[ids, "label"].to_numpy()),
                      float(m.weight or 1.0))
        tied = votes >= votes.max(axis=1, keepdims=True) - 1e-12
        labels = np.where(tied, probs, -1.0).argmax(axis=1)
    overruled = int((labels != probs.argmax(axis=1)).sum())
    weights = {n: w * n_fit / total for n, w in zip(b.models, b.weights)} if b else {}
    weights |= {n: w / total for n, w in shares.items()}
    table = _member_table(b, members, oofs, weights, comp)
    every = {n: _labels_of(n, tests, members, ids, comp) for n in table["member"]}
    every |= {"blend": probs.argmax(axis=1), "team": labels}
    return TeamBlend(table, b, ids, probs, labels, agreement_table(every), overruled)


def competition_folds(oofs: dict, comp: Competition) -> dict:
    """``oofs`` with each table's ``fold`` taken from the competition's folds.csv by id: the blend is
    cross-fitted over the competition's folds whatever a member's table says (a teammate's OOF may have
    no fold column, or folds of their own). Without folds.csv the fold columns are dropped and the blend
    is fitted in-sample, with a warning."""
    path = comp.work / "folds.csv"
    if not path.exists():
        warnings.warn(f"{path} does not exist: the team blend's weights and temperature are fitted and scored on the "
                      "same OOF rows (optimistic); lib.data.folds.make_folds writes it (02_train does)", stacklevel=3)
        return {n: o.drop(columns="fold", errors="ignore") for n, o in oofs.items()}
    fold = pd.read_csv(path, dtype={"id": str}).set_index("id")["fold"]
    out = {}
    for name, o in oofs.items():
        unknown = sorted(set(o["id"]) - set(fold.index))
        if unknown:
            raise ValueError(f"{path} has no fold for {len(unknown)} OOF ids of {name} (e.g. {unknown[:3]}): it was "
                             "made for other training images (did the data change after 02_train?); the team blend "
                             "is cross-fitted over it, so it must hold every OOF id")
        out[name] = o.assign(fold=o["id"].map(fold).to_numpy())
    return out


def _labels_of(name: str, tests: dict, members: list[Member], ids, comp: Competition) -> np.ndarray:
    """A member's predicted class per test row [N], rows in ``ids`` order."""
    m = next((m for m in members if m.name == name), None)
    t = tests[name] if m is None else m.test
    if m is not None and m.kind == "label":
        return t.set_index("id").loc[ids, "label"].to_numpy(np.int64)
    return t.set_index("id").loc[ids, comp.classes].to_numpy(np.float64).argmax(axis=1)


def _member_table(b: Blend | None, members: list[Member], oofs: dict, weights: dict, comp: Competition) -> pd.DataFrame:
    """One row per member: kind, source, how it is weighted, its share of the probability blend, its
    vote weight (label files) and its scores on its own OOF rows (when it has OOF)."""
    rows = []
    for name in list(oofs) + [m.name for m in members]:
        m = next((x for x in members if x.name == name), None)
        label = m is not None and m.kind == "label"
        how = "fitted on OOF" if b and name in b.models else "vote" if label else "given" if m.weight else "equal"
        row = {"member": name, "kind": m.kind if m else "probs", "source": m.source if m else "local runs",
               "how": how, "blend_weight": None if label else round(weights[name], 4),
               "vote_weight": float(m.weight or 1.0) if label else None}
        oof = oofs[name] if m is None else m.oof
        if oof is not None:
            y, p = oof["target"].to_numpy(np.int64), oof[comp.classes].to_numpy(np.float64)
            row |= {"oof_rows": len(y), **scores(y, p)}
        rows.append(row)
    return pd.DataFrame(rows)


def agreement_table(labels: dict[str, np.ndarray]) -> pd.DataFrame:
    """Share of test rows on which each pair of predictions names the same class (1 on the diagonal)."""
    names = list(labels)
    out = pd.DataFrame(1.0, index=names, columns=names)
    for a, c in itertools.combinations(names, 2):
        out.loc[a, c] = out.loc[c, a] = float(np.mean(labels[a] == labels[c]))
    return out.round(4)


def write_team_submission(team: TeamBlend, comp: Competition, path, runs_dir="runs") -> pd.DataFrame:
    """The team's submission shaped like the sample (labels after the vote, or the blended
    probabilities), validated and written atomically; ``<runs_dir>/ensemble/team_members.csv`` and
    ``team_agreement.csv`` beside the local blend's files. Returns the submission."""
    if comp.sample_submission is None:
        raise FileNotFoundError(f"{comp.root}/sample_submission.csv is missing: it fixes the submission's ids "
                                "and columns; copy it from the competition")
    values = comp.label_values
    probs = np.eye(comp.num_classes)[team.labels] if values is not None else team.probs
    ids, probs = with_unreadable_rows(team.ids, probs, comp)
    sub = make_submission(probs, ids, comp.sample_submission, label_values=values,
                          positive=comp.positive)
    write_submission(sub, resolve(path), comp.sample_submission, values)
    out = resolve(runs_dir) / "ensemble"
    write_csv(out / "team_members.csv", team.members)
    write_csv(out / "team_agreement.csv", team.agreement, index=True)
    return sub
