# The commands the README tells people to type. Each calls `setup` first, which is quick
# when everything is already installed.
VENV     := .venv
PY       := $(VENV)/bin/python
SCENARIO ?= experiments/spaceverse-shanghai.yaml
PYTEST_ARGS ?=

DATA     ?= $(or $(TESTBED_DATA),../shared/data)

.PHONY: setup run test bench lint clean vm-image models models-vlm models-codecs

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/testbed run $(SCENARIO)

test: setup
	$(PY) -m pytest -m "not bench" $(PYTEST_ARGS)

bench: setup
	$(PY) -m pytest -m bench -p no:randomly -s $(PYTEST_ARGS) tests

# The satellite guest image for the libvirt backend (Debian packages, cached by recipe hash
# under runs/.cache/vm-images or $TESTBED_CACHE; about 2 min the first time, root).
vm-image:
	$(PY) vm_images/build_image.py

lint: setup
	$(PY) -m ruff check testbed netem controller nodes tests

# Trained weights, cached with their provenance under .cache/models/ (rebuilt only when the
# data or the settings change). The codecs: the first lambda trains CODEC_STEPS steps, each
# next one CODEC_WARM_STEPS steps warm-started from the previous (a rate ladder).
CODEC_ARCHS      ?= bmshj2018-hyperprior
CODEC_LAMBDAS    ?= 0.0067 0.013 0.025 0.0483
CODEC_STEPS      ?= 250
CODEC_WARM_STEPS ?= 80
CODEC_CHANNELS   ?= 64
CODEC_LR         ?= 1e-3
CODEC_MARGIN_PX  ?= 0
CODEC_CACHE      ?= .cache/models/codecs

models: models-vlm models-codecs

models-codecs: setup
	$(PY) -m nodes.models.codecs.train --images $(DATA)/images \
	    --cache $(CODEC_CACHE) --arch $(CODEC_ARCHS) --lambdas $(CODEC_LAMBDAS) \
	    --steps $(CODEC_STEPS) --warm-steps $(CODEC_WARM_STEPS) --lr $(CODEC_LR) \
	    --n $(CODEC_CHANNELS) --m $(CODEC_CHANNELS) --margin-px $(CODEC_MARGIN_PX)

models-vlm: setup
	$(PY) -m nodes.models.vlm.train --data $(DATA)/images --out .cache/models/vlm
	$(PY) -m nodes.models.vlm.evaluate --data $(DATA)/images --models .cache/models/vlm \
		--json .cache/models/vlm/accuracy.json
	$(PY) -m nodes.spaceverse.store --data $(DATA)/images --models .cache/models/vlm \
		--out .cache/models/vlm/confidence --calib-per-task 100

# Tear down every run whose ledger is still there before deleting the run directories: a
# failed teardown stops here and keeps runs/ (the ledgers are what `down` needs).
clean:
	@if [ -d runs ] && [ -x $(VENV)/bin/testbed ]; then $(VENV)/bin/testbed clean-all runs; fi
	rm -rf runs/ .pytest_cache build *.egg-info

# SpaceVerse experiments (needs `make models-vlm`; the testbed runs need root): the six
# methods on the emulated constellation (Fig. 9, one run per method at speed 1, about 5 min
# each here) and the in-process ablations (Fig. 10-12). Results in experiments/spaceverse/results.
.PHONY: experiments experiments-spaceverse
experiments: experiments-spaceverse

experiments-spaceverse: setup
	$(PY) experiments/spaceverse/testbed.py --name testbed-paper
	$(PY) experiments/spaceverse/ablations.py --per-task 40

# SkyMoE (nodes/models/skymoe): a pre-trained frozen encoder, stage 0, stage I (LoRA on q/v)
# and stage II (every second FFN upcycled to SKYMOE_EXPERTS experts, top-2), cached with their
# provenance under .cache/models/skymoe/; then the per-task accuracy beside the majority baseline.
SKYMOE_EXPERTS ?= 4
.PHONY: models-skymoe experiments-skymoe
models: models-skymoe
models-skymoe: setup
	$(PY) -m nodes.models.skymoe.train --data $(DATA)/images --out .cache/models/skymoe \
	    --experts $(SKYMOE_EXPERTS)
	$(PY) -m nodes.models.skymoe.evaluate --data $(DATA)/images --models .cache/models/skymoe \
	    --names dense skymoe-e$(SKYMOE_EXPERTS) --json .cache/models/skymoe/accuracy.json

experiments: experiments-skymoe
experiments-skymoe: setup
	$(PY) experiments/skymoe/run.py --data $(DATA)/images
# DLRC experiments (experiments/dlrc/README.md): R-D with and without DLRC for the codecs
# trained here, the k / representative ablation, encoder overhead by patch size, the sync-time
# model over 12 h and G_down. `models-codecs-dlrc` trains the context-model codecs they use;
# `experiments-dlrc-testbed` runs DLRC on the emulated network (root, Open vSwitch).
.PHONY: models-codecs-dlrc models-codecs-margin experiments experiments-dlrc experiments-dlrc-testbed
models-codecs-dlrc: models-codecs
	$(MAKE) models-codecs CODEC_ARCHS="mbt2018 cheng2020-attn" CODEC_LAMBDAS="0.0067 0.0483" \
	    CODEC_STEPS=1000 CODEC_WARM_STEPS=250
	$(MAKE) models-codecs CODEC_ARCHS=elic2022-official CODEC_LAMBDAS="0.0067 0.0483"

# The scale hyperprior trained with 32 px of scene around each crop seen by g_a (DLRC's
# margin_px; experiments/dlrc/README.md), in a cache of its own.
models-codecs-margin: setup
	$(MAKE) models-codecs CODEC_MARGIN_PX=32 CODEC_CACHE=.cache/models/codecs-margin32

RD = $(PY) experiments/dlrc/rd.py --max-windows 6
experiments-dlrc: models-codecs-dlrc models-codecs-margin
	$(RD) --arch bmshj2018-hyperprior
	$(RD) --arch mbt2018 --lambdas 0.0067 0.0483
	$(RD) --arch cheng2020-attn --lambdas 0.0067 0.0483
	$(RD) --arch elic2022-official --lambdas 0.0067 0.0483
	$(RD) --arch mbt2018 --lambdas 0.0067 0.0483 --cross-context zero \
	    --out experiments/dlrc/results/mbt2018-cross-zero
	$(RD) --arch bmshj2018-hyperprior --lambdas 0.0067 0.0483 --margin-px 32 \
	    --out experiments/dlrc/results/bmshj2018-hyperprior-margin32
	$(RD) --arch bmshj2018-hyperprior --margin-px 32 --cache .cache/models/codecs-margin32 \
	    --plain-cache .cache/models/codecs \
	    --out experiments/dlrc/results/bmshj2018-hyperprior-margin32-trained
	$(PY) experiments/dlrc/ablation.py --lmbda 0.0483 --rounds 1 2 4 8 20 32
	$(PY) experiments/dlrc/overhead.py
	$(PY) experiments/dlrc/sync_time.py $(if $(wildcard experiments/dlrc/results/testbed/summary.json),--measured experiments/dlrc/results/testbed/summary.json)
	$(PY) experiments/dlrc/gdown.py

experiments-dlrc-testbed: models-codecs
	$(PY) experiments/dlrc/testbed_run.py

experiments: experiments-dlrc
