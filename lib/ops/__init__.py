"""Top floor: the command lines that run the rest.

grid (every recipe x fold through papermill) and jobs (one grid job, its command and log), ray_grid
(the grid on a Ray cluster), bundle (an offline code-competition bundle), export (ONNX), summary
(a pipeline's scores), demo (the embedded demo competition), backup (sync / restore runs/), team
(teammates' files blended, the leaderboard log).
"""
