# foldbook: `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.foldbook-installed
# what `make test` and `make lint` add: pytest, linters, every extra and the servers the tests start
DEV_STAMP := $(VENV)/.foldbook-dev-installed
# extras beside the runtime, by purpose (pyproject.toml): make env EXTRAS=tracking,backup,cluster,export
EXTRAS ?=
# the project's Jupyter kernel, registered inside $(VENV): `make lab` and papermill find it, the notebooks declare it
KERNEL := foldbook
KERNEL_SPEC := $(VENV)/share/jupyter/kernels/$(KERNEL)/kernel.json

# the demo competition: fashion-mnist when Debian's files are there, else scikit-learn's digits
DEMO_SOURCE ?= auto
DEMO_ARGS   ?= --max-train-per-class 300 --max-test 1000
# the folder lib.ops.demo builds: data/fmnist or data/digits
DEMO_NAME   := $(if $(filter auto,$(DEMO_SOURCE)),$(shell [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && echo fmnist || echo digits),$(if $(filter digits,$(DEMO_SOURCE)),digits,fmnist))
DEMO_DATA   ?= data/$(DEMO_NAME)
DEMO_PARAMS ?= params/demo/resnet.yaml params/demo/convnext.yaml
DEMO_FOLDS  ?= 0-2
# digits are not mirror-symmetric: the digits demo trains without horizontal flips
DEMO_FLIPS  := $(if $(filter digits,$(DEMO_NAME)),-p hflip False)

# the grid: every params file (PARAMS, required) x fold; DATA and N_FOLDS, when given, override the recipes'
# (whose default is 5 folds, as the notebooks' and lib.ops.grid's); any other grid option in ARGS, e.g.
# make grid PARAMS=params/convnext_tiny.yaml DATA=data/cars ARGS='-y "{loss_args: {label_smoothing: 0.1}}" --jobs 2'
PARAMS ?=
DATA   ?=
N_FOLDS ?=
FOLDS  ?= 0-4
JOBS   ?= 1
RUNS   ?= runs
ARGS   ?=
PAPERMILL := $(PY) -m papermill --cwd $(CURDIR) -k $(KERNEL)

# the scored Fashion-MNIST benchmark (params/fmnist/README.md): full data, each recipe x 5 folds + its full-data refit
FM_DATA     ?= data/fmnist_full
FM_RUNS     ?= runs/fmnist
FM_PARAMS   ?= params/fmnist/airnet.yaml
FM_BASELINE ?= params/fmnist/resnet64.yaml
FM_TTA      ?= [identity, hflip]
FM_REFIT    ?= blend

# backups of $(RUNS) off the machine: any fsspec URL (s3://bucket/prefix, gs://..., a mounted folder)
SYNC_TO ?=

.PHONY: env kernel demo quick test lint lab grid bundle clean-runs bench-fmnist bench-fmnist-compute sync restore

env: $(STAMP) $(KERNEL_SPEC)

$(KERNEL_SPEC): $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "$(KERNEL) (.venv)" >/dev/null
	@echo "jupyter kernel $(KERNEL) registered: $(dir $(KERNEL_SPEC))"

# the same kernel for every other Jupyter of this user (an existing JupyterLab, JupyterHub, a conda-base Lab)
kernel: env
	$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "$(KERNEL) ($(CURDIR))"

# another PyTorch build with the same pins: make env TORCH_INDEX=<PyTorch's wheel index for it>, e.g. on a
# machine without a GPU TORCH_INDEX=https://download.pytorch.org/whl/cpu (no CUDA libraries: ~5 GB less)
TORCH_INDEX ?=
# pytest-xdist workers (auto: one per core); a test file runs on one worker, and tests/conftest.py gives
# each worker its share of the cores
TEST_WORKERS ?= auto

# `make test` / `make lint` on a new venv install the runtime and dev in one pip call (one resolve); the stamp
# holds the extras it installed, so dev is added later only where it is missing
INSTALL_EXTRAS := $(if $(filter test lint,$(MAKECMDGOALS)),dev,$(EXTRAS))
# pip compiles bytecode one file at a time; compileall -j 0 afterwards uses every core (2 cores: 129 against
# 153 s for the dev install), and leaves out the packages' own test suites, which nothing imports (36 -> 30 s).
# It exits 1 for a few files of packages' own test data that are not Python 3.11, which pip skips as well: ignored.
install = $(PY) -m pip install --quiet --no-compile -e ".$(if $(1),[$(1)])" && \
	{ $(PY) -m compileall -q -j 0 -x 'site-packages/.*/tests?/' \
		"$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true; }

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet --no-compile --index-url $(TORCH_INDEX) $$(grep -oE '"torch(vision)?==[^"]+"' pyproject.toml | tr -d '"'))
	$(call install,$(INSTALL_EXTRAS))
	@echo "$(INSTALL_EXTRAS)" > $(STAMP)
	@echo "environment ready: $(VENV) ($$($(PY) -c 'import torch; print("torch", torch.__version__)'), $$(du -sh $(VENV) | cut -f1))"

demo: env
	@start=$$(date +%s); \
	$(PY) -m lib.ops.demo --source $(DEMO_SOURCE) $(DEMO_ARGS) && \
	$(PAPERMILL) notebooks/01_eda.ipynb runs/01_eda.ipynb -p data_dir $(DEMO_DATA) -p n_folds 3 && \
	$(PY) -m lib.ops.grid --params $(DEMO_PARAMS) --folds $(DEMO_FOLDS) -p data_dir $(DEMO_DATA) -p n_folds 3 $(DEMO_FLIPS) --force && \
	$(PAPERMILL) notebooks/03_oof_analysis.ipynb runs/03_oof_analysis.ipynb -p data_dir $(DEMO_DATA) && \
	$(PAPERMILL) notebooks/04_ensemble_tta.ipynb runs/04_ensemble_tta.ipynb -p data_dir $(DEMO_DATA) -p progress False && \
	$(PY) -m lib.ops.summary --data-dir $(DEMO_DATA) --runs-dir runs --score && \
	echo "make demo: $$(( $$(date +%s) - start )) s"

# your own competition, a first submission in minutes: 01, params/quick.yaml on 3 folds, 04, the summary.
# DATA=data/<name>; ARGS: more overrides for the grid, e.g. ARGS="-p max_samples 500" for a smoke run
QUICK_PARAMS ?= params/quick.yaml
quick: env
	@test -n "$(DATA)" || { echo "make quick: give DATA=data/<name> (your competition's folder)"; exit 2; }
	@start=$$(date +%s); mkdir -p $(RUNS) && \
	$(PAPERMILL) notebooks/01_eda.ipynb $(RUNS)/01_eda.ipynb -p data_dir $(DATA) -p n_folds 3 && \
	$(PY) -m lib.ops.grid --params $(QUICK_PARAMS) --folds 0-2 --runs-dir $(RUNS) -p data_dir $(DATA) -p n_folds 3 $(ARGS) && \
	$(PAPERMILL) notebooks/04_ensemble_tta.ipynb $(RUNS)/04_ensemble_tta.ipynb -p data_dir $(DATA) -p runs_dir $(RUNS) \
		-p submission $(RUNS)/submission.csv -p progress False && \
	$(PY) -m lib.ops.summary --data-dir $(DATA) --runs-dir $(RUNS) && \
	echo "make quick: $(RUNS)/submission.csv in $$(( $$(date +%s) - start )) s"

# every step resumes: a rerun after an interruption skips finished runs (start afresh: rm -rf $(FM_RUNS))
bench-fmnist: env
	@start=$$(date +%s); mkdir -p $(FM_RUNS) && \
	$(PY) -m lib.ops.demo --source fashion-mnist --name $(notdir $(FM_DATA)) --out $(dir $(FM_DATA)) && \
	$(PAPERMILL) notebooks/01_eda.ipynb $(FM_RUNS)/01_eda.ipynb -p data_dir $(FM_DATA) -p n_folds 5 && \
	$(PY) -m lib.ops.grid --params $(FM_PARAMS) --folds 0-4 --runs-dir $(FM_RUNS) -p data_dir $(FM_DATA) -p n_folds 5 && \
	$(PY) -m lib.ops.grid --params $(FM_PARAMS) --full --runs-dir $(FM_RUNS) -p data_dir $(FM_DATA) -p n_folds 5 && \
	$(PAPERMILL) notebooks/03_oof_analysis.ipynb $(FM_RUNS)/03_oof_analysis.ipynb -p data_dir $(FM_DATA) \
		-p runs_dir $(FM_RUNS) && \
	$(PAPERMILL) notebooks/04_ensemble_tta.ipynb $(FM_RUNS)/04_ensemble_tta.ipynb -p data_dir $(FM_DATA) \
		-p runs_dir $(FM_RUNS) -p submission $(FM_RUNS)/submission.csv -p progress False -y "{tta: $(FM_TTA), tta_oof: true, refit: $(FM_REFIT)}" && \
	$(PY) -m bench.fmnist_baseline --data-dir $(FM_DATA) --params $(FM_BASELINE) --out $(FM_RUNS)/baseline && \
	$(PY) -m bench.fmnist_report --data-dir $(FM_DATA) --runs-dir $(FM_RUNS) --started $$start

# is k-fold worth its compute? after bench-fmnist: the fastai baseline and one full-data run of the
# grid's best recipe by CV, each given the grid's training minutes (bench/fmnist_compute.py); the report lists them
bench-fmnist-compute: env
	$(PY) -m bench.fmnist_compute --data-dir $(FM_DATA) --runs-dir $(FM_RUNS) --params $(FM_BASELINE) && \
	$(PY) -m bench.fmnist_report --data-dir $(FM_DATA) --runs-dir $(FM_RUNS)

$(DEV_STAMP): $(STAMP)
	@grep -qx dev $(STAMP) || { $(call install,dev); }
	@touch $(DEV_STAMP)

test: env $(DEV_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# ruff: pyflakes, pycodestyle, import order, bugbear (settings in pyproject.toml), notebooks included;
# import-linter: lib's floors import only downward (docs/architecture.md)
lint: env $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# torch.compile's caches where the grid's runs keep theirs (lib.ops.jobs.run_env), unless set already
lab: env
	TORCHINDUCTOR_CACHE_DIR=$${TORCHINDUCTOR_CACHE_DIR:-$(CURDIR)/.cache/torchinductor} $(VENV)/bin/jupyter lab --notebook-dir=$(CURDIR)$(if $(filter 0,$(shell id -u)), --allow-root)

grid: env
	@test -n "$(PARAMS)" || { echo 'make grid: give PARAMS="params/<recipe>.yaml ..." and DATA=data/<competition> (make demo runs the demo grid)'; exit 2; }
	$(PY) -m lib.ops.grid --params $(PARAMS) --folds $(FOLDS) --jobs $(JOBS) --runs-dir $(RUNS)$(if $(DATA), -p data_dir $(DATA))$(if $(N_FOLDS), -p n_folds $(N_FOLDS)) $(ARGS)

# an offline bundle of 04's blend for code competitions (wheel + runs + 05_inference.ipynb)
OUT  ?= bundle
bundle: env
	$(PY) -m lib.ops.bundle --runs $(RUNS) --out $(OUT) --force

# mirror runs/ to SYNC_TO (changed files only; nothing deleted there), or bring it back after a lost machine
sync: env
	@test -n "$(SYNC_TO)" || { echo "make sync: give SYNC_TO=s3://bucket/prefix (or gs://..., or a mounted folder)"; exit 2; }
	$(PY) -m lib.ops.backup sync --runs-dir $(RUNS) --to $(SYNC_TO)

restore: env
	@test -n "$(SYNC_TO)" || { echo "make restore: give SYNC_TO=s3://bucket/prefix (where make sync wrote)"; exit 2; }
	$(PY) -m lib.ops.backup restore --from $(SYNC_TO) --runs-dir $(RUNS)

clean-runs:
	rm -rf runs/*/ runs/*.ipynb
