"""Train vs test shift: how differently the two are distributed, per statistic and all together.

Reads the table of ``lib.insight.image_stats.image_stats``; writes ``<root>/eda/shift.csv``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, ks_2samp, mannwhitneyu
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from threadpoolctl import threadpool_limits

from lib.core.io import write_csv
from lib.data.competition import Competition
from lib.insight.eda import GEOMETRY, STATS, eda_dir
from lib.insight.image_stats import select


def shift_scores(comp: Competition, stats: pd.DataFrame, threshold: float = 0.1, alpha: float = 1e-3,
                 adversarial: bool = True, auc_threshold: float = 0.7, save: bool = True) -> pd.DataFrame:
    """How differently train and test are distributed, one row per statistic.

    score: the two-sample Kolmogorov-Smirnov statistic D (0 = same distribution, 1 = disjoint) for
    ``STATS`` and ``GEOMETRY``; the total-variation distance of the shares for ``orientation``; and,
    with ``adversarial``, a last row ``adversarial`` whose score is the 5-fold ROC AUC of a classifier
    telling train from test on all those numbers (0.5 = indistinguishable). A row is flagged when
    score >= ``threshold`` (AUC >= ``auc_threshold``) and its p-value < ``alpha`` (so a few dozen
    images do not raise flags by chance). Written to ``<root>/eda/shift.csv``.
    """
    ok = stats[stats["problem"] == ""]
    tr, te = ok[ok["split"] == "train"], ok[ok["split"] == "test"]
    rows = []
    if len(tr) and len(te):
        for col, what in {**STATS, **GEOMETRY}.items():
            a, b = tr[col].dropna().to_numpy(float), te[col].dropna().to_numpy(float)
            r = ks_2samp(a, b, method="asymp")
            rows.append({"stat": col, "method": "KS D", "score": r.statistic, "p_value": r.pvalue,
                         "train_median": np.median(a), "test_median": np.median(b), "what": what})
        table = pd.crosstab(ok["split"], ok["orientation"])
        shares = table.div(table.sum(axis=1), axis=0)
        tvd = 0.5 * (shares.loc["train"] - shares.loc["test"]).abs().sum()
        p = chi2_contingency(table.to_numpy()).pvalue if table.shape[1] > 1 else 1.0
        rows.append({"stat": "orientation", "method": "total variation", "score": tvd, "p_value": p,
                     "train_median": np.nan, "test_median": np.nan,
                     "what": "train " + ", ".join(f"{k} {v:.0%}" for k, v in shares.loc["train"].items())
                     + "; test " + ", ".join(f"{k} {v:.0%}" for k, v in shares.loc["test"].items())})
    out = pd.DataFrame(rows, columns=["stat", "method", "score", "p_value", "train_median", "test_median", "what"])
    out["flagged"] = (out["score"] >= threshold) & (out["p_value"] < alpha)
    if adversarial and len(tr) >= 10 and len(te) >= 10:
        adv = adversarial_auc(stats)
        out.loc[len(out)] = {"stat": "adversarial", "method": "5-fold HistGradientBoosting ROC AUC",
                             "score": adv["auc"], "p_value": adv["p_value"], "train_median": np.nan,
                             "test_median": np.nan, "what": "train vs test classifier on all stats above",
                             "flagged": adv["auc"] >= auc_threshold and adv["p_value"] < alpha}
    if save:
        write_csv(eda_dir(comp) / "shift.csv", out.assign(id=out["stat"])[["id", *out.columns]])
    return out


def adversarial_auc(stats: pd.DataFrame, max_per_split: int = 10_000, folds: int = 5, seed: int = 0) -> dict:
    """ROC AUC of telling train from test by ``STATS`` + ``GEOMETRY`` (out-of-fold, HistGradientBoosting).

    Returns auc, p_value (Mann-Whitney test of the out-of-fold scores), n_train, n_test.
    """
    ok = stats[stats["problem"] == ""]
    parts = [select(ok[ok["split"] == s], max_per_split, seed) for s in ("train", "test")]
    df = pd.concat(parts)
    x, y = df[list(STATS) + list(GEOMETRY)].to_numpy(float), (df["split"] == "test").to_numpy(int)
    cv = StratifiedKFold(min(folds, int(y.sum()), int(len(y) - y.sum())), shuffle=True, random_state=seed)
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, random_state=seed)
    with threadpool_limits(1):  # OpenMP threads next to busy cores (a pool, a build) can be 50x slower
        p = cross_val_predict(clf, x, y, cv=cv, method="predict_proba")[:, 1]
    return {"auc": float(roc_auc_score(y, p)), "p_value": float(mannwhitneyu(p[y == 1], p[y == 0]).pvalue),
            "n_train": int(len(parts[0])), "n_test": int(len(parts[1]))}
