"""pytest's hooks for the whole suite. The shared fixtures and helpers live in tests/shared.py, loaded here
as a plugin in every process that runs tests: not in pytest-xdist's controlling process (``make test``: ``-n
auto``), which only hands out test files. Its imports (torch, timm, fastai, lib) ran there on one core before
the first worker started: a 2-file ``-n 2`` run took 18.2 s with them, 13.8 s without."""
from __future__ import annotations

import os
from collections import Counter


def _xdist_controller(config) -> bool:
    """pytest-xdist's controlling process: workers run the tests (``workerinput``), it runs none."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config):
    """Under pytest-xdist, the cores are split between the workers: through OMP_NUM_THREADS, torch in each
    worker (tests/shared.py) and the papermill kernels and grid jobs a test starts, so that two workers on
    two cores do not each run two threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, len(os.sched_getaffinity(0)) // workers)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if not _xdist_controller(config):
        config.pluginmanager.import_plugin("shared")


def pytest_collection_modifyitems(config, items):
    """The files holding the most ``slow`` tests first, the rest in their order: pytest-xdist hands out whole
    files (``--dist loadfile``) as workers free up, so a long file started last would leave one worker running
    it alone at the end (``make test`` passes ``--no-loadscope-reorder``, which keeps this order)."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: each file's tests stay together and in order
