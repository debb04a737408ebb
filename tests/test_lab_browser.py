"""03_oof_analysis as users run it: a real JupyterLab driven by a real browser.

The test trains a tiny demo in its own process (1 backbone x 2 folds, 1 epoch), starts JupyterLab from this
environment on a free localhost port with a token, and drives Debian's Chromium through
chromium-driver (Selenium pointed at the system binaries: its own downloads cannot work offline).
It opens 03 (the demo's data_dir and runs_dir filled in as papermill would), runs all cells from
the Run menu, waits for the kernel to go idle, and checks: the notebook runs on the project kernel
with no error, the pair gallery and the reviewer widget render, and a click on "wrong label" writes
the marks CSV row. Screenshot: ``<tmp>/lab/03_oof_analysis.png``. Every wait is bounded, the whole
test has a hard limit (``LIMIT_S``), and the server and the browser are always stopped.
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from lib.core.config import TrainConfig
from lib.core.paths import repo_root
from lib.ops.jobs import KERNEL, check_kernel
from lib.train.loop import train_fold

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
LIMIT_S = 120  # hard limit of the whole test (it took 24-29 s on 2 CPU cores under `make test`)
pytestmark = [
    pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                       "(apt-get install chromium chromium-driver; .ci/run installs them)"),
    pytest.mark.skipif(importlib.util.find_spec("selenium") is None, reason="needs selenium (pip install -e '.[dev]')"),
]


@pytest.fixture()
def hard_limit():
    """Raise TimeoutError in the test after LIMIT_S seconds, whatever it waits on (its finally blocks run)."""
    def stop(*_):
        raise TimeoutError(f"the browser test ran past {LIMIT_S} s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _runs(digits_comp, tmp_path) -> Path:
    """A tiny demo's runs: test_resnet on 2 folds, 1 epoch, trained in this process (the grid's own path,
    papermill and a kernel per run, is tested in tests/ops/test_grid.py and tests/test_notebooks.py)."""
    runs = tmp_path / "runs"
    for fold in (0, 1):
        cfg = TrainConfig(data_dir=str(digits_comp), runs_dir=str(runs), run_name=f"tres_f{fold}", fold=fold,
                          backbone="test_resnet", img_size=32, batch_size=32, epochs=1, lr=0.003, n_folds=2,
                          verbose=False)
        assert train_fold(cfg)["complete"]
    return runs


def _notebook(lab: Path, **params) -> Path:
    """notebooks/03_oof_analysis.ipynb with its parameters injected (as papermill does), in ``lab``."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(repo_root() / "notebooks" / "03_oof_analysis.ipynb"))
    path = lab / "03_oof_analysis.ipynb"
    nbformat.write(parameterize_notebook(nb, params), path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, method: str = "GET", timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=timeout) as r:
            return r.status
    except OSError:
        return 0


def _start_lab(root: Path, tmp: Path, port: int, token: str) -> subprocess.Popen:
    """JupyterLab of this environment serving ``root``; settings, config and workspaces kept in ``tmp``
    (cells are not virtualised, so every output is in the page; no news toast over the cells)."""
    for ext, name, values in (("notebook-extension", "tracker", {"windowingMode": "none"}),
                              ("apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False})):
        (tmp / "settings" / "@jupyterlab" / ext).mkdir(parents=True)
        (tmp / "settings" / "@jupyterlab" / ext / f"{name}.jupyterlab-settings").write_text(json.dumps(values))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
           "JUPYTER_DATA_DIR": str(tmp / "data")}  # the kernel and the widgets extension are in this environment
    with open(tmp / "jupyterlab.log", "w") as log:  # the server keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                                 f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                                 f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                                 *(["--allow-root"] if os.geteuid() == 0 else [])],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop_lab(proc: subprocess.Popen, port: int, token: str) -> None:
    """Shut the server down with its kernels (REST), else terminate it, else kill its process group."""
    if proc.poll() is None:
        _http(f"http://127.0.0.1:{port}/api/shutdown?token={token}", "POST")
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait(what: str, check, timeout: float, every: float = 0.5):
    """``check()``'s first truthy value within ``timeout`` seconds, else AssertionError naming ``what``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1700", "--lang=en-US"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def _menu(driver, menu: str, command: str) -> None:
    """Click ``menu`` in the menu bar, then its item that runs ``command``."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//li[contains(@class,'lm-MenuBar-item')][normalize-space()='{menu}']").click()
    _wait(f"menu item {command}", lambda: driver.find_elements(
        By.CSS_SELECTOR, f".lm-Menu-item[data-command='{command}']"), 10)[0].click()


def _cell(driver, code: str):
    """The notebook cell whose input contains ``code``."""
    from selenium.webdriver.common.by import By

    cells = [c for c in driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell")
             if code in c.find_element(By.CSS_SELECTOR, ".jp-InputArea").text]
    assert len(cells) == 1, f"{len(cells)} cells contain {code!r}"
    return cells[0]


def _run_all(driver, n_code: int, idle: str) -> None:
    """Run > Run All Cells, then wait until the kernel is idle and no cell is queued; every code cell
    must have run (a failing cell stops the others) and none may show a traceback."""
    from selenium.webdriver.common.by import By

    _menu(driver, "Run", "runmenu:run-all")

    def prompts():
        p = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".jp-CodeCell .jp-InputPrompt")]
        ran = sum(any(ch.isdigit() for ch in x) for x in p)
        return (not any("*" in x for x in p) and driver.find_elements(By.CSS_SELECTOR, idle)
                and (ran == n_code or "Traceback" in driver.page_source) and ran)
    ran = _wait("every cell to run and the kernel to go idle", prompts, 90, every=1)
    errors = [e.text[:1500] for e in driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
              if "Traceback (most recent call last)" in e.text]
    assert not errors, errors
    assert ran == n_code, f"{ran} of {n_code} code cells ran"


@pytest.mark.slow
def test_03_runs_in_jupyterlab_and_a_click_marks_an_image(digits_comp, tmp_path, hard_limit, monkeypatch):
    from selenium.webdriver.common.by import By

    check_kernel()  # `make env` registers it; the notebook declares it
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not try to download anything
    started = time.monotonic()
    runs = _runs(digits_comp, tmp_path)
    lab = tmp_path / "lab"
    lab.mkdir()
    nb_path = _notebook(lab, data_dir=str(digits_comp), runs_dir=str(runs), top_pairs=2, top_losses=8)
    marks = runs / "analysis" / "exclude_ids.csv"
    port, token = _free_port(), secrets.token_hex(16)
    proc, driver = _start_lab(lab, tmp_path, port, token), None
    try:
        _wait("JupyterLab to answer", lambda: proc.poll() is None and _http(
            f"http://127.0.0.1:{port}/api/status?token={token}") == 200 or proc.poll() is not None, 60)
        assert proc.poll() is None, (tmp_path / "jupyterlab.log").read_text()[-3000:]
        driver = _browser()
        driver.get(f"http://127.0.0.1:{port}/lab/tree/{nb_path.name}?token={token}")
        name = ".jp-NotebookPanel-toolbar .jp-KernelName"
        shown = lambda: [e.text for e in driver.find_elements(By.CSS_SELECTOR, name)]
        try:  # opened on the project kernel, with no "Select Kernel" dialog
            _wait(f"kernel {KERNEL} (.venv)", lambda: shown() == [f"{KERNEL} (.venv)"], 60)
        except AssertionError as e:
            dialogs = [d.text for d in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog")]
            raise AssertionError(f"{e}; the toolbar shows {shown()}, dialogs: {dialogs}") from None
        idle = ".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator[data-status='idle']"
        _wait("the kernel to start", lambda: driver.find_elements(By.CSS_SELECTOR, idle), 60)

        _run_all(driver, sum(c.cell_type == "code" for c in nbformat.read(nb_path, as_version=4).cells), idle)

        pair_figures = _cell(driver, "analysis.pair_galleries(").find_elements(By.CSS_SELECTOR, ".jp-RenderedImage img")
        assert len(pair_figures) == 2, "top_pairs=2: two pair galleries"
        widget = _cell(driver, "review.reviewer(")
        wrong = _wait("the reviewer widget", lambda: widget.find_elements(
            By.XPATH, ".//button[contains(@class,'jupyter-button')][normalize-space()='wrong label']"), 30)
        assert len(wrong) == 8 and widget.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")
        card = wrong[0].find_element(By.XPATH, "./ancestor::div[contains(@class,'widget-vbox')][1]")
        image_id = card.find_element(By.TAG_NAME, "b").text
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", wrong[0])
        wrong[0].click()
        row = _wait("the marks CSV row", lambda: marks.exists() and pd.read_csv(marks, dtype={"id": str})
                    [["id", "mark"]].values.tolist(), 15)
        assert row == [[image_id, "wrong label"]]
        _wait("the button to show the mark", lambda: "mod-danger" in wrong[0].get_attribute("class"), 10)
        driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", widget)  # the galleries above it
        shot = lab / "03_oof_analysis.png"
        assert driver.save_screenshot(str(shot))
        print(f"browser test: {time.monotonic() - started:.0f} s; screenshot {shot}")
    finally:
        if driver is not None:
            driver.quit()
        _stop_lab(proc, port, token)
    assert proc.returncode is not None
