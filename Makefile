# The commands the README tells people to type. Each calls `setup` first, which is quick
# when everything is already installed.
VENV     := .venv
PY       := $(VENV)/bin/python
SCENARIO ?= experiments/spaceverse-shanghai.yaml
PYTEST_ARGS ?=

.PHONY: setup run test bench lint clean models models-codecs

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/testbed run $(SCENARIO)

test: setup
	$(PY) -m pytest -m "not bench" $(PYTEST_ARGS)

bench: setup
	$(PY) -m pytest -m bench -p no:randomly -s $(PYTEST_ARGS) tests

# Trained models, cached under .cache/models with their provenance (reused when settings and
# data are unchanged). The codecs: the first lambda trains CODEC_STEPS steps, each next one
# CODEC_WARM_STEPS steps warm-started from the previous (a rate ladder).
TESTBED_DATA     ?= ../shared/data
CODEC_ARCHS      ?= bmshj2018-hyperprior
CODEC_LAMBDAS    ?= 0.0067 0.013 0.025 0.0483
CODEC_STEPS      ?= 250
CODEC_WARM_STEPS ?= 80
CODEC_CHANNELS   ?= 64
CODEC_LR         ?= 1e-3

models: models-codecs

models-codecs: setup
	$(PY) -m nodes.models.codecs.train --images $(TESTBED_DATA)/images \
	    --cache .cache/models/codecs --arch $(CODEC_ARCHS) --lambdas $(CODEC_LAMBDAS) \
	    --steps $(CODEC_STEPS) --warm-steps $(CODEC_WARM_STEPS) --lr $(CODEC_LR) \
	    --n $(CODEC_CHANNELS) --m $(CODEC_CHANNELS)

lint: setup
	$(PY) -m ruff check testbed netem controller nodes tests

clean:
	-$(VENV)/bin/testbed clean-all 2>/dev/null
	rm -rf runs/ .pytest_cache build *.egg-info
