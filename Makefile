# beamcap — `make help` lists the targets. Everything runs inside .venv, created on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install browser demo quality test lint format bench lock clean run-direct run-dataflow \
        run-flink docker flex-template runners prism gcs-servers flink-jars spark-jars flink-up \
        flink-down

# Extra flags for `beamcap demo`: make demo DEMO_ARGS="--encoder-weights imagenet"
DEMO_ARGS ?=
# Time budget of `make quality` in minutes (phase 2 gets what the other steps leave), extra flags
QUALITY_MINUTES ?= 85
QUALITY_ARGS ?=

# Cloud settings for the run-* targets: make run-dataflow PROJECT=p REGION=r BUCKET=b
PROJECT ?= my-project
REGION  ?= us-central1
BUCKET  ?= $(PROJECT)-beamcap
IMAGE   ?= $(REGION)-docker.pkg.dev/$(PROJECT)/beamcap/worker:0.1.0
INPUT   ?= gs://$(BUCKET)/incoming/
MODEL   ?= gs://$(BUCKET)/models/v1
OUTPUT  ?= gs://$(BUCKET)/captions
JOB_ENDPOINT ?= localhost:8099
WORKER_POOL  ?= localhost:50000
FLINK_MASTER ?= localhost:8081

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

# Runners for the tests and local runs, built or fetched once into build/ (git-ignored)
BEAM_VERSION := 2.77.0
PRISM        := build/bin/prism
FLINK_LIB    := build/flink/lib
SPARK_LIB    := build/spark/lib

# The set-up steps print one line each; the tools' own output goes to $(LOG), named (with its
# last lines) when a step fails. make V=1 shows it as it comes.
LOG := build/make.log
ifeq ($(V),1)
quietly :=
else
quietly = >>$(LOG) 2>&1 || { echo "  failed: $(1); the tools' output is in $(LOG), ending:"; \
  tail -n 30 $(LOG); exit 1; }
endif
step = @mkdir -p build && echo "$(1)" && echo "=== $$(date -u +%FT%TZ) $(1)" >>$(LOG)

$(STAMP): setup.py constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("beamcap needs Python 3.10+") if sys.version_info < (3, 10) else None'
	$(call step,install: Python packages into $(VENV) (pinned by constraints.txt))
	@{ $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet --upgrade pip && \
	  $(BIN)/pip install --quiet -c constraints.txt -e '.[test]'; } $(call quietly,install)
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install beamcap with its test extra, pinned by constraints.txt

GO_INSTALL   := GOPATH=$(CURDIR)/build/go GOMODCACHE=$(CURDIR)/build/go/mod \
  GOCACHE=$(CURDIR)/build/go/cache GOFLAGS=-modcacherw go install
FAKE_GCS     := build/bin/fake-gcs-server
TOXIPROXY    := build/bin/toxiproxy-server

$(PRISM):
	$(call step,runners: Beam's Prism runner from the Go module proxy)
	@GOBIN=$(CURDIR)/build/bin $(GO_INSTALL) github.com/apache/beam/sdks/v2/go/cmd/prism@v$(BEAM_VERSION) $(call quietly,Prism)

prism: $(PRISM) ## build Beam's Prism runner from Beam's Go module into build/bin/prism (needs Go)

$(FAKE_GCS):
	$(call step,runners: fake-gcs-server from the Go module proxy)
	@GOBIN=$(CURDIR)/build/bin $(GO_INSTALL) github.com/fsouza/fake-gcs-server@v1.56.1 $(call quietly,fake-gcs-server)

$(TOXIPROXY):  # its command is named "server": installed aside, then renamed
	$(call step,runners: Toxiproxy from the Go module proxy)
	@{ GOBIN=$(CURDIR)/build/go/toxiproxy $(GO_INSTALL) github.com/Shopify/toxiproxy/v2/cmd/server@v2.5.0 && \
	  mv build/go/toxiproxy/server $@; } $(call quietly,Toxiproxy)

gcs-servers: $(FAKE_GCS) $(TOXIPROXY) ## build fake-gcs-server and Toxiproxy (the tests' storage and network faults) into build/bin/

build/%/lib/.fetched: cluster/%-pom.xml
	$(call step,runners: $* and Beam's $* job server jars from Maven Central)
	@mvn -B -q -f $< -Dmaven.repo.local=$(CURDIR)/build/m2 \
	  dependency:copy-dependencies -DoutputDirectory=$(CURDIR)/$(@D) $(call quietly,the $* jars)
	@touch $@

flink-jars: $(FLINK_LIB)/.fetched ## fetch Flink 1.19 and Beam's Flink job server jars into build/flink/lib (Maven)

spark-jars: $(SPARK_LIB)/.fetched ## fetch Spark 3.5 and Beam's Spark job server jars into build/spark/lib (Maven)

runners: prism gcs-servers flink-jars spark-jars ## build or fetch the runners and servers the tests use into build/

flink-up: install flink-jars ## start a local Flink cluster, Beam's job server and an SDK worker pool (cluster/local_flink.py)
	$(BIN)/python -m cluster.local_flink up

flink-down: ## stop what flink-up started
	$(PYTHON) -m cluster.local_flink down

demo: install ## the whole job on the synthetic dataset: synth, features, train, quantize, caption, evaluate, report
	$(BIN)/beamcap demo --workdir data/demo $(DEMO_ARGS)

quality: install ## pretrain, then both training phases on 60k synthetic scenes, ~QUALITY_MINUTES min: held-out accuracy, BLEU-4, CIDEr-D, learning curve
	$(BIN)/beamcap quality --workdir data/quality --minutes $(QUALITY_MINUTES) $(QUALITY_ARGS)

# Two test processes (pytest-xdist): on this project's 2-core CPU the suite took 11 min instead of
# 17.5 (TensorFlow, the JVMs and Beam's workers leave a core idle much of the time; 3 took 11.6,
# the CPU is then the limit). --dist loadgroup
# keeps the tests that share an expensive fixture (an xdist_group mark) on one worker, so it is
# built once. TEST_ARGS adds flags. Every temporary file of the suite, its JVMs' included, goes
# in TEST_TMP: cleared before a run and removed after one that passed (a failed run's stays to be
# read). In /tmp, killed TaskManagers and servers had left gigabytes run after run.
TEST_WORKERS ?= 2
TEST_ARGS ?=
TEST_TMP := build/test-tmp
test: install runners browser ## run the whole test suite (TEST_WORKERS=1: in one process)
	rm -rf $(TEST_TMP) && mkdir -p $(TEST_TMP)
	TMPDIR=$(CURDIR)/$(TEST_TMP) $(BIN)/python -m pytest \
	  $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup) $(TEST_ARGS)
	rm -rf $(TEST_TMP)

browser: ## Debian's Chromium, for the test that renders the report (apt-get, as root)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  export DEBIAN_FRONTEND=noninteractive && \
	  { apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && \
	      apt-get install -y -q --no-install-recommends chromium >/dev/null; }; }; } || \
	  { echo "failed: browser: Chromium is not installed and only root with apt-get installs it"; \
	    exit 1; }

run-direct: install ## caption INPUT with MODEL into OUTPUT on this machine (DirectRunner, --only-new)
	$(BIN)/beamcap caption --input $(INPUT) --model $(MODEL) --output $(OUTPUT) --only-new \
	  --direct_num_workers 0 --direct_running_mode multi_processing

run-dataflow: install ## submit the caption job to Dataflow with GPU workers (configs/dataflow-gpu.yaml)
	$(BIN)/beamcap caption --config dataflow-gpu --input $(INPUT) --model $(MODEL) \
	  --output $(OUTPUT) --only-new --project $(PROJECT) --region $(REGION) \
	  --temp_location gs://$(BUCKET)/tmp --sdk_container_image $(IMAGE)

run-flink: install ## submit the caption job to Beam's Flink job server at JOB_ENDPOINT (configs/flink.yaml; worker pool at WORKER_POOL, Flink's REST API at FLINK_MASTER)
	$(BIN)/beamcap caption --config flink --input $(INPUT) --model $(MODEL) --output $(OUTPUT) \
	  --only-new --job_endpoint $(JOB_ENDPOINT) --environment_config $(WORKER_POOL) \
	  --flink_master $(FLINK_MASTER)

docker: ## build and push the worker image IMAGE (needs a Docker engine)
	docker build --target worker -t $(IMAGE) . && docker push $(IMAGE)

flex-template: ## build the flex-template image and its spec at gs://BUCKET/templates/
	docker build --target flex-template -t $(IMAGE)-launcher . && docker push $(IMAGE)-launcher
	gcloud dataflow flex-template build gs://$(BUCKET)/templates/beamcap-caption.json \
	  --image $(IMAGE)-launcher --sdk-language PYTHON --metadata-file templates/caption-metadata.json

lint: install ## ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## ruff: fix what can be fixed, reformat
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## the CPU speed benchmarks: beam search, caption job (ratios against an in-run baseline)
	$(BIN)/python benchmarks/beam_search.py
	$(BIN)/python benchmarks/caption_pipeline.py

lock: ## re-resolve the dependencies in a scratch venv and rewrite constraints.txt
	rm -rf /tmp/beamcap-lock && $(PYTHON) -m venv /tmp/beamcap-lock
	/tmp/beamcap-lock/bin/pip install --quiet --upgrade pip
	/tmp/beamcap-lock/bin/pip install --quiet -e '.[test]'
	/tmp/beamcap-lock/bin/pip freeze --exclude-editable | grep -v '^beamcap' > constraints.txt

clean: ## remove the virtualenv and caches (not data/ or out/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
