"""foldbook: the small shared package behind the four competition notebooks.

Modules, one concern each:
    data        scan a competition folder: tables, problems, classes, folds
    images      decode any image file to RGB (EXIF, reduced-scale JPEG), header checks
    dataset     the pre-resized image cache and the torch Dataset
    augment     albumentations 2.x presets by name
    backbones   timm models by name, local weights, GeM pooling
    losses      losses by name (hard and soft targets)
    metrics     competition metrics, temperature scaling
    train       one backbone on one fold with fastai, run artifacts, resume (callbacks: EMA,
                reseeding, MixUp-or-CutMix, the run recorder)
    runs        reading run artifacts back (OOF, test predictions, leaderboard)
    grid        backbone x fold grid through papermill (local or Ray)
    analysis    OOF analysis: confusion pairs, top losses, calibration
    predict     re-prediction of runs with TTA, the fitted blend and the submission
    ensemble    OOF-fitted blend weights, submission writing and validation
    tta         test-time augmentation ops by name
    eda         class counts, geometry, unreadable files (eda_plots: the plots of the EDA modules)
    image_stats the one pass over the images: per-image statistics and hashes, cached
    shift       train vs test shift: KS per statistic, adversarial AUC
    duplicates  exact and near duplicates, label conflicts, train->test leaks
    viz         image grids and fonts for class names
    demo        build the embedded demo competition; summary prints a pipeline's scores
    io, paths, device   atomic writes; paths relative to the repo root; device and worker choice
"""
__version__ = "0.1.0"
