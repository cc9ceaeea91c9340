# The README's two commands:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo

.PHONY: demo test install-builder install-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Builder only: numpy, numba, pillow, pypng, webdataset, click, tqdm, jsonschema, fsspec.
install-builder: $(BIN)/python
	$(BIN)/pip install --quiet -e .

# Everything: builder, trainer (torch, timm), object storage (s3fs), Ray, test tools.
install-all: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[train,s3,ray,dev]"
	$(BIN)/pip check

# Build a small 1p-frac data set (100 classes, 256x256), verify it and write a preview.
demo: install-builder
	$(BIN)/fracbuild render --L 100 --size 256 --delta 0.1 --out $(DEMO)/shards --overwrite
	$(BIN)/fracbuild verify $(DEMO)/shards --deep 4
	$(BIN)/fracbuild preview $(DEMO)/shards --out $(DEMO)/preview.png
	$(BIN)/fracbuild info $(DEMO)/shards
	@echo "data set: $(DEMO)/shards   preview: $(DEMO)/preview.png"

test: install-all
	$(BIN)/python -m pytest -q

bench: install-all
	$(BIN)/python benchmarks/render_bench.py

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
