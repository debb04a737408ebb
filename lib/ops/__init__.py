"""Top floor: the command lines that run the rest, and their work.

Command lines (``python -m lib.ops.<name>``; each parses its arguments before importing its work, so
``--help`` answers at once): grid (every recipe x fold through papermill), export (ONNX), bundle (an
offline code-competition bundle), demo (the embedded demo competition), summary (a pipeline's
scores), backup (sync / restore runs/), teacher (a model's fold-safe teacher tables), team
(teammates' files blended, the leaderboard log).
Their work: runner (the grid's runs, locally or on Ray), jobs (one grid job, its command and log),
ray_grid (the grid on a Ray cluster), onnx_export, offline (the bundle), demo_data (the demo
competition and its scoring).
"""
