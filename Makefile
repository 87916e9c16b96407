# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Prerequisites: Python >= 3.11, Java 17+ and Maven (the local Kafka broker comes from Maven Central).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

# Line coverage floor (percent) of the core modules, checked by `make test` after the whole
# suite (in-process and the consumer subprocesses). A listed file that does not exist yet is
# no error: the patterns only select among measured files. The rest of consumer/ is measured
# and its total printed, without a floor.
COVERAGE_FLOOR := 90
CORE_MODULES   := consumer/pipeline.py,consumer/commit.py,consumer/batch.py,consumer/bodies.py,consumer/deliver/*,consumer/dead_letter.py,consumer/decode.py,consumer/source.py,consumer/runner.py

# Helm for the chart's tests (tests/helm), built once with `go install` from the Go module proxy
# into a cache every worktree shares. The -X flags are the ones helm's release builds stamp in:
# without them `helm version` says v3.22 and .Capabilities.KubeVersion is v1.20.0.
TOOLS          := $(HOME)/.cache/kafka-klaviyo/tools
HELM_VERSION   := v3.22.0
HELM_K8S_MINOR := 37
HELM           := $(TOOLS)/bin/helm-$(HELM_VERSION)
HELM_PKG       := helm.sh/helm/v3
HELM_LDFLAGS   := -s -w -X $(HELM_PKG)/internal/version.version=$(HELM_VERSION) \
	-X $(HELM_PKG)/pkg/chartutil.k8sVersionMajor=1 -X $(HELM_PKG)/pkg/chartutil.k8sVersionMinor=$(HELM_K8S_MINOR) \
	-X $(HELM_PKG)/pkg/lint/rules.k8sVersionMajor=1 -X $(HELM_PKG)/pkg/lint/rules.k8sVersionMinor=$(HELM_K8S_MINOR)
export KAFKA_KLAVIYO_HELM := $(HELM)
# promtool, Prometheus's rule checker and rule unit tester, for the chart's alerts; the version
# is the Go module's (github.com/prometheus/prometheus v0.316.0, Prometheus 3.x).
PROMTOOL_VERSION := v0.316.0
PROMTOOL         := $(TOOLS)/bin/promtool-$(PROMTOOL_VERSION)
export KAFKA_KLAVIYO_PROMTOOL := $(PROMTOOL)
GO_ENV           := GOPATH=$(TOOLS)/go GOMODCACHE=$(TOOLS)/go/mod GOCACHE=$(TOOLS)/go/build GOFLAGS=-modcacherw

.PHONY: install demo test lint typecheck unit component integration helm promtool helm-test helm-docs coverage-report bench bench-quick bench-translate clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package with its dev tools

demo: install ## Local Kafka + Klaviyo emulator + the guide's sample orders, end to end
	$(PY) -m kafka_klaviyo_dev demo

lint: install
	$(VENV)/bin/ruff check consumer kafka_klaviyo_dev tests bench

typecheck: install
	$(VENV)/bin/mypy --strict consumer kafka_klaviyo_dev

unit: install ## Pure logic: no broker, no emulator server, no consumer process (seconds)
	$(PY) -m pytest -q tests/unit

component: install ## The real pipeline in one process, fakes only at the Kafka edges
	$(PY) -m pytest -q tests/component

integration: install ## The consumer as a subprocess on the real broker and emulator (fault tests too)
	$(PY) -m pytest -q tests/integration

test: install lint typecheck helm promtool ## ruff, mypy --strict, the whole pytest suite with coverage, the coverage floor
	$(PY) -m coverage erase
	$(PY) -m pytest -q --cov --cov-report=
	@$(MAKE) --no-print-directory coverage-report

$(HELM):
	@command -v go >/dev/null || { echo "FAIL: Go is needed to build helm $(HELM_VERSION) (go install; https://go.dev/dl/)"; exit 1; }
	@mkdir -p $(TOOLS)/bin
	@echo "Building helm $(HELM_VERSION) into $(TOOLS) (once; about 3-6 minutes)"
	@tmp=$$(mktemp -d $(TOOLS)/bin/.helm.XXXXXX) && \
	$(GO_ENV) GOBIN=$$tmp go install -trimpath -ldflags "$(HELM_LDFLAGS)" $(HELM_PKG)/cmd/helm@$(HELM_VERSION) && \
	mv $$tmp/helm $@ && rmdir $$tmp

$(PROMTOOL):
	@command -v go >/dev/null || { echo "FAIL: Go is needed to build promtool $(PROMTOOL_VERSION) (go install; https://go.dev/dl/)"; exit 1; }
	@mkdir -p $(TOOLS)/bin
	@echo "Building promtool $(PROMTOOL_VERSION) into $(TOOLS) (once; about 10 minutes)"
	@tmp=$$(mktemp -d $(TOOLS)/bin/.promtool.XXXXXX) && \
	$(GO_ENV) GOBIN=$$tmp go install -trimpath -ldflags "-s -w" github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION) && \
	mv $$tmp/promtool $@ && rmdir $$tmp

helm: $(HELM) ## The pinned helm the chart's tests use (built once with go install)

promtool: $(PROMTOOL) ## The pinned promtool the chart's alert tests use (built once with go install)

helm-test: install helm promtool ## The chart: helm lint/template, Kubernetes schemas, CRDs, settings and rules
	$(PY) -m pytest -q tests/helm

helm-docs: install ## Regenerate the chart's config schema and its README's values table
	$(PY) helm/generate.py

coverage-report: install ## Coverage of the last `make test` run: core modules (floor) and the package total
	@echo "Line coverage of the core modules (floor $(COVERAGE_FLOOR)%):"
	@$(PY) -m coverage report --include='$(CORE_MODULES)' --show-missing
	@echo "Line coverage of the whole consumer package: $$($(PY) -m coverage report --format=total)%"
	@$(PY) -m coverage report --include='$(CORE_MODULES)' --format=total --fail-under=$(COVERAGE_FLOOR) >/dev/null \
		|| { echo "FAIL: core modules' line coverage is under $(COVERAGE_FLOOR)% (CORE_MODULES in the Makefile)"; exit 1; }

bench: bench-translate ## All benchmarks: figures and same-run ratios -> bench-results.json (~16 min)
	$(PY) -m bench.e2e
	$(PY) -m bench.replay

bench-quick: install ## A small smoke run of the end-to-end benchmarks (~3 min)
	$(PY) -m bench.e2e --quick

bench-translate: install ## Compiled rules vs hand-written OrderPlaced translation -> bench-results.json
	$(PY) bench/translate.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache bench-results.json .coverage .coverage.* htmlcov

# --- The chart on a real API server: `make test-cluster`, beside `make test`, not part of it --
# A real etcd and kube-apiserver, built once from their Go modules (tests/cluster/build_tools.sh:
# about 12 minutes on 2 cores, cached in $(TOOLS) beside helm), then tests/cluster/: strict
# server-side validation, helm install, upgrade and uninstall of the chart. No kubelet,
# scheduler or controller-manager: the server validates and stores objects, no Pod ever runs.
ETCD_VERSION   := v3.7.3
KUBE_VERSION   := v1.37.2
ETCD           := $(TOOLS)/bin/etcd-$(ETCD_VERSION)
KUBE_APISERVER := $(TOOLS)/bin/kube-apiserver-$(KUBE_VERSION)

.PHONY: cluster-tools test-cluster

cluster-tools: $(HELM) ## etcd, kube-apiserver (and helm) for test-cluster, built once into the cache
	@command -v go >/dev/null || { echo "FAIL: Go is needed to build etcd and kube-apiserver (https://go.dev/dl/)"; exit 1; }
	@TOOLS=$(TOOLS) ETCD_VERSION=$(ETCD_VERSION) KUBE_VERSION=$(KUBE_VERSION) GOPATH=$(TOOLS)/go \
		nice -n 10 sh tests/cluster/build_tools.sh

test-cluster: install cluster-tools ## The chart installed, upgraded, uninstalled on a real kube-apiserver
	KAFKA_KLAVIYO_ETCD=$(ETCD) KAFKA_KLAVIYO_KUBE_APISERVER=$(KUBE_APISERVER) KAFKA_KLAVIYO_HELM=$(HELM) \
		$(PY) -m pytest -q tests/cluster
