# The set-up behind the README's two commands.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench

# EGL (headless OpenGL for pyrender) where missing; then torch 2.13.0 before the project, so
# that the project's torch>= range is already met: where pip is configured with a local CPU
# wheel of it (the project's machines) that is what installs, elsewhere PyPI's default build
# (CUDA, several GB); only if that install fails, the newest CPU build from PyTorch's own index.
# Then the project with its test extra.
$(BIN)/jumpbench: pyproject.toml
	@scripts/egl-deps.sh
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

setup: $(BIN)/jumpbench

# The small built-in main job: a small Traveling Salesman set, verified, and a preview.
demo: setup
	$(BIN)/jumpbench generate narratives --n 200 --test-n 50 --out data
	$(BIN)/jumpbench verify data/traveling_salesman
	$(BIN)/jumpbench view data/traveling_salesman --split test --index 0 --out results/preview.png
	$(BIN)/jumpbench run --model jump --data data/traveling_salesman --preset smoke --quiet
	@echo "wrote data/traveling_salesman, results/preview.png and results/runs/traveling_salesman/jump/smoke/seed-0"

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python scripts/bench_narratives.py
