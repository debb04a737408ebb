"""Data floor: a competition folder read one way, its folds, images, augmentation and datasets.

competition (open_competition), labels (tables, class names, submission kinds), images (decoding),
folds (folds.csv and the fold split of a recipe), augment (albumentations presets by name), dataset
(the pre-resized cache and the torch Dataset), soft_targets (teacher tables under the fold rule).
Beside lib.model; neither imports the other.
"""
