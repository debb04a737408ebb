"""foldbook: the small shared package behind the competition notebooks, a house with floors.

    core     the recipe (TrainConfig), its checks and choices, paths, io, device, precision, metrics, run folders
    data     a competition folder, labels, images, folds, augmentation, the image cache and Dataset
    model    backbones, losses, optimiser groups, TTA ops, a model's forward pass
    train    one backbone on one fold with fastai: the loop, callbacks, checkpoints, averaging, stages
    predict  runs read back, re-predicted, blended, calibrated and submitted
    insight  what the notebooks show: EDA, duplicates, shift, OOF analysis, reviewer, diffs
    ops      command lines: grid (local or Ray), bundle, export, summary, demo, backup, teacher

Each floor imports only the floors below it (train and predict are siblings, as are data and
model): docs/architecture.md, checked by import-linter in `make lint`.
"""
__version__ = "0.1.0"
