"""The ground floor: what every other floor stands on, importing no floor above it.

paths (repo root, relative paths), io (atomic writes), config (TrainConfig, the recipe) with its
checks, rules and choices (the names a recipe picks from, so that making one imports neither torch
nor albumentations), device and precision (where and in which dtype a run computes), metrics,
rundir (a run folder's files, read back), backup (run folders mirrored to any fsspec URL) and cli
(the command lines' parser).
"""
