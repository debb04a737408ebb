"""Insight floor: what the notebooks show a person about the data and the runs.

eda, eda_plots, image_stats (one cached pass over the images), duplicates, shift (train vs test),
viz (image grids, class names in any script), analysis (03: leaderboard, confusions, calibration),
curves (03: every run's learning curves), review (03's reviewer), browse (images in a folder per
class), diffs (where submissions disagree), lb_plot (CV beside the leaderboard over time).
"""
