# Two commands do all the set-up: `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
BOOTSTRAP_PYTHON ?= python3.11

# `CORPUS=images` (with demo, ui, search): scikit-image's photographs and their captions, embedded by
# MiniLM and a small open_clip model side by side, in a LanceDB and a Dagster instance of their own.
ifeq ($(CORPUS),images)
export CORPUS_URI ?= skimage
export EMBEDDINGS_URI ?= $(CURDIR)/.data/lance-images
export MODEL_REGISTRY ?= $(CURDIR)/models-images.yaml
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster-images
INSTANCE := $(DAGSTER_HOME)/dagster.yaml
endif
# The Dagster instance lives in this folder (it holds dagster.yaml) unless you say otherwise.
export DAGSTER_HOME ?= $(CURDIR)
# Models load from local folders shipped in packages: never reach for a model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export LANCE_LOG ?= error

.PHONY: install demo ui test search register promote canary rollback serve bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PYTHON) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch first, from this exact release: other versions pull gigabytes from the network.
	$(PYTHON) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

ifdef INSTANCE
$(INSTANCE): dagster.yaml
	mkdir -p $(@D) && cp $< $@
endif

# `ALLOW_MASS_DELETE=1`: let the corpus mark more documents deleted than its limit allows (see README).
demo: install $(INSTANCE)
	$(PYTHON) -m embedding_assets.cli.demo $(if $(ALLOW_MASS_DELETE),--allow-mass-delete)

ui: install $(INSTANCE)
	@echo "Dagster UI on http://127.0.0.1:3000 (instance: $(DAGSTER_HOME))"
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The UI tests drive Debian's chromium with Playwright (`playwright install` cannot download here).
/usr/bin/chromium:
	apt-get update -qq && apt-get install -y -qq chromium

test: install /usr/bin/chromium
	$(PYTHON) -m pytest

# The OpenAI-compatible embeddings and search API on 127.0.0.1:$(PORT), over the same tables and
# registry as the pipeline (EMBEDDINGS_URI, MODEL_REGISTRY). REDIS_URL and SERVING_API_KEYS are optional.
PORT ?= 8000
serve: install
	PORT=$(PORT) $(PYTHON) -m serving

bench: install
	$(PYTHON) -m benchmarks.run $(args)

# make search q="..." [v=<model version>]: the live version, or the one named.
search: install
	$(PYTHON) -m embedding_assets.cli.search $(if $(v),--version "$(v)") -- "$(q)"

# make register key=mpnet-base-v1 model_id=sentence-transformers/all-mpnet-base-v2 \
#   source=split-zip:all-mpnet-base-v2 dim=768 max_tokens=384 [revision=1 normalize=true dtype=auto]
register: install
	$(PYTHON) -m embedding_assets.cli.manage register --registry "$${MODEL_REGISTRY:-models.yaml}" --key "$(key)" \
	  --model-id "$(model_id)" --source "$(source)" --dim "$(dim)" --max-tokens "$(max_tokens)" \
	  --revision "$${revision:-1}" --normalize "$${normalize:-true}" --dtype "$${dtype:-auto}"

# make promote v=<version> [force=1]
promote: install
	$(PYTHON) -m embedding_assets.cli.manage promote "$(v)" $(if $(force),--force)

# make canary v=<version> pct=10|50|100: that share of live traffic, only while the version's gates pass;
# pct=0 clears the canary (so does make rollback).
canary: install
	$(PYTHON) -m embedding_assets.cli.manage canary "$(v)" "$(pct)"

# make rollback [to=<version>]: clears a canary if there is one, else switches live back
rollback: install
	$(PYTHON) -m embedding_assets.cli.manage rollback --to "$(to)"

clean:
	rm -rf .data storage history schedules logs .logs_queue .nux .telemetry
