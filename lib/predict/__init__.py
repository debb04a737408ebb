"""Predict floor: trained runs read back, re-predicted, blended, calibrated and submitted.

oof (runs' OOF and test tables), inference (a run re-predicted with TTA), blend and crossfit (OOF-fitted
weights, strategies compared on held-out folds), decision (per-class offsets), calibrate (the
submitted mean's temperature, the score to expect), refit (full-data runs in 04 and 05), submission
(shaped like the sample, validated), pipeline (05's submission from the runs alone), team
(teammates' files), teacher (teacher tables from fold runs), lb_log (each submission's CV beside its
public leaderboard score). Beside lib.train; neither imports the other.
"""
