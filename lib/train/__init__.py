"""Train floor: one backbone on one fold with fastai, resumable, leaving a run folder.

loop (setup_run, fit, write_predictions = predict_run + run_summary + finish_run, train_fold),
build (datasets, Learner, callbacks of a recipe), callbacks, checkpoint, averaging (SWA, top-k),
stages (lr phases, progressive resizing), warmstart (init_from), distributed (data-parallel workers),
tracking (MLflow, W&B), report (learning curves, the environment). Beside lib.predict; neither imports the other.
"""
