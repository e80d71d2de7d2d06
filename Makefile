# deepssm-nb: two commands.
#   make tutorial   set up, build the femur cohort, run every notebook (workshop profile)
#   make test       set up, lint (ruff check, ruff format --check), run the whole test suite (notebooks in the
#                   smoke profile)
#   make lab        open JupyterLab on the notebooks
#   make notebooks  rewrite notebooks/ from their sources in tools/notebooks/

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# On machines whose pip sees a local CPU wheel, this takes it. Elsewhere, to avoid a
# multi-GB CUDA build: make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC     ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PROFILE ?= workshop

export VTK_DEFAULT_OPENGL_WINDOW ?= vtkEGLRenderWindow
export PYVISTA_OFF_SCREEN ?= true

.PHONY: setup tutorial test lab notebooks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

tutorial: setup
	PYVISTA_JUPYTER_BACKEND=static $(BIN)/python tools/run_tutorial.py --profile $(PROFILE) --out tutorial_output

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	-$(BIN)/python tools/ensure_chromium.py
	PYVISTA_JUPYTER_BACKEND=static $(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900

notebooks: setup
	for f in tools/notebooks/[0-9]*.py; do $(BIN)/python $$f || exit 1; done

lab: setup
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf tutorial_output deepssm_output .pytest_cache
