# Entry points for a fresh clone: `make demo` (set up, train the demo model, write its report), `make test` (set
# up, run the test suite) and `make docs` (the documentation site). Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint docs docs-screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# β-TCVAE with the small MLP at batch 32: of the settings benchmarks/demo_sizing.py compares, the one that
# disentangled most per CPU-second on 2 cores (about 2 minutes in all, evaluation included)
demo: $(STAMP)
	$(BIN)/untwine train beta-tcvae --data dsprites --quick --network mlp --batch-size 32 --epochs 6 \
		--out runs/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the notebooks run during the build (quick mode, cached in docs/_build); any warning fails it
docs: $(STAMP)
	$(BIN)/sphinx-build -b html -W --keep-going docs docs/_build/html
	@echo "Docs: docs/_build/html/index.html"

docs-screenshots: docs
	$(BIN)/python docs/screenshots.py docs/_build/html --out docs/_build/screenshots

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache docs/_build docs/api/generated
