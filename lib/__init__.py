"""foldbook: the small shared package behind the competition notebooks.

Modules, one concern each:
    config      TrainConfig: every training setting with its default and checks (the recipe;
                config_checks: type checks and unknown-name messages)
    data        open_competition: a competition folder's tables, classes and problems, one way
    folds       folds.csv, made once per competition
    images      decode any image file to RGB (EXIF, reduced-scale JPEG), header checks
    dataset     the pre-resized image cache and the torch Dataset
    augment     albumentations 2.x presets by name
    tta         test-time augmentation ops by name
    backbones   timm models by name, local weights, GeM pooling
    smallnet    airnet_tiny / airnet_small in timm's registry: networks for native 28-32 px images
    optim       parameter groups (weight decay, layer-wise lr decay) and torch.compile with on-disk caches
    losses      losses by name (hard and soft targets)
    metrics     competition metrics, temperature scaling
    build       a run's model, datasets, Learner and callbacks from its recipe
    callbacks   EMA, reseeding, MixUp-or-CutMix, bf16 on CPU, the run recorder
    checkpoint  best weights and resumable state, written in the background
    train       setup_run, fit, write_predictions: one backbone on one fold
    stages      the lr schedule phase by phase (one-cycle per stage, plateau), progressive resizing
    averaging   SWA and top-k averaging of epochs' weights, BatchNorm recomputed
    warmstart   init_from: another run's weights, only from the same fold of the same folds.csv
    recipe_rules  which averaging, stages and plateau settings go together (no fastai import)
    teacher     soft targets from a teacher (distillation, pseudo-labels) under the fold rule
    refit       full-data refit: the epochs the CV chose, its test predictions in 04 (replace / blend)
    report      learning curves and the environment of a run
    grid        recipe x fold grid through papermill (local or Ray)
    runs        reading runs back: recipes, OOF and test predictions
    inference   predictions averaged over TTA ops; a run re-predicted from its files
    blend       OOF-fitted blend weights and temperature
    crossfit    blend strategies compared on held-out folds (equal / best single / fitted)
    decision    per-class decision offsets for accuracy and macro F1
    calibrate   the submitted fold mean made as sharp as one calibrated fold model; the score to expect
    submission  submissions shaped like the sample, validated, written
    team        teammates' files as ensemble members (OOF-fitted or given weights, label votes), agreement
    diffs       where two or more submissions disagree: tables and an image gallery
    browse      images in one folder per class (OOF mistakes, test predictions, noisy labels)
    tracking    MLflow / W&B callbacks, opt-in (imported only when chosen)
    backup      runs/ mirrored to any fsspec URL (s3://, gs://, a folder) and restored
    analysis    OOF analysis: leaderboard, confusion pairs, galleries, top losses, calibration
    review      03's interactive reviewer (ipywidgets): page through mistakes, mark images to exclude
    eda         class counts, geometry, unreadable files (eda_plots: the plots of the EDA modules)
    image_stats the one pass over the images: per-image statistics and hashes, cached
    shift       train vs test shift: KS per statistic, adversarial AUC
    duplicates  exact and near duplicates, label conflicts, train->test leaks
    viz         image grids and class names in plots
    demo        build the embedded demo competition; summary prints a pipeline's scores
    io, paths, device   atomic writes; paths relative to the repo root; device and worker choice
"""
__version__ = "0.1.0"
