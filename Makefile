# snrmoe — the two commands (see README):  make reports   |   make test
# Both create the virtualenv in .venv if it is missing and install the pinned dependencies.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
SNRMOE := $(VENV)/bin/snrmoe
STAMP  := $(VENV)/.installed
CONFIG ?= default
JOBS   ?= 2
export JUPYTER_PREFER_ENV_PATH := 1
export PYTHONHASHSEED := 0

.PHONY: env data reports sweep hub test unit lab bench clean-reports

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (or: make PYTHON=python3 ...)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile --disable-pip-version-check -e .
	@touch $(STAMP)

## env: create .venv and install snrmoe_lib with its pinned dependencies
env: $(STAMP)

## data: generate the mock dataset of CONFIG (default) if it is missing
data: env
	$(SNRMOE) simulate --params params/$(CONFIG).yaml

## reports: the main job — data, every notebook into reports/$(CONFIG)/ with HTML, then the Hub page
## (JOBS notebooks at a time, each once the notebooks it reads have finished; JOBS=1: one after another)
reports: data
	$(SNRMOE) run --params params/$(CONFIG).yaml --jobs $(JOBS)
	$(SNRMOE) hub --reports reports

## sweep: every SNR configuration (single magnitudes and the noise_level sweep), two at a time, then the Hub page
sweep: env
	$(SNRMOE) run --params params/mag*.yaml params/noise*.yaml --jobs 2 --hub

## hub: reports/index.html and reports/hub.md from every results file under reports/
hub: env
	$(SNRMOE) hub --reports reports

# the Hub test opens reports/index.html in headless chromium; without one it is skipped, and said so
CHROMIUM := $(firstword $(SNRMOE_CHROMIUM) $(shell command -v chromium chromium-browser google-chrome 2>/dev/null))

## test: unit tests and nbval on every notebook (smoke configuration)
test: env
	@test -n "$(CHROMIUM)" || echo "note: no chromium found: the Hub's browser test is SKIPPED" \
		"(install it with 'apt-get install chromium', or run .ci/run, which does)"
	$(SNRMOE) simulate --params params/smoke.yaml
	$(if $(CHROMIUM),,SNRMOE_ALLOW_NO_BROWSER=1) $(PY) -m pytest -n 2 --dist loadscope --nbval-lax \
		--nbval-current-env --nbval-cell-timeout=900 -p no:cacheprovider tests notebooks

unit: env
	$(PY) -m pytest -n 2 tests

## lab: JupyterLab on the notebooks; .py files open as notebooks through jupytext (as root: --allow-root, as in containers)
lab: env
	$(VENV)/bin/jupytext-config set-default-viewer python >/dev/null 2>&1 || true
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

## bench: every benchmark script (prints its figures)
bench: env
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-reports:
	rm -rf reports/*/
