"""Benchmark scripts: each prints its figures as a ratio against a baseline timed in the same run.

Run them from the repo root as modules, e.g. ``python -m bench.data_throughput``; bench/README.md
has the figures measured so far.
"""
