"""foldbook: the small shared package behind the four competition notebooks.

Modules, one concern each:
    data        scan a competition folder, classes, folds, image decoding, pre-resized cache
    augment     albumentations 2.x presets by name
    backbones   timm models by name, local weights, GeM pooling
    losses      losses by name (hard and soft targets)
    metrics     competition metrics, temperature scaling
    train       one backbone on one fold with fastai, run artifacts, resume
    runs        reading run artifacts back (OOF, test predictions, leaderboard)
    grid        backbone x fold grid through papermill (local or Ray)
    analysis    OOF analysis: confusion pairs, top losses, calibration
    ensemble    OOF-fitted blend weights, submission writing and validation
    tta         test-time augmentation ops by name
    eda         image statistics, duplicates, train/test shift
    demo        build the embedded demo competition
"""
__version__ = "0.1.0"
