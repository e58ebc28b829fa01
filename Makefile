# Herald — see README.md. `make run` and `make test` are the two commands.
SHELL := /bin/bash
GO ?= go
BIN := bin/herald
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
GOBIN := $(shell $(GO) env GOPATH)/bin
# Packages with concurrency, tested again under the race detector.
RACE_PKGS := ./relay/... ./controller/... ./cacher/... ./management/... ./internal/store/... ./internal/protocol/... ./assembly/... ./devstack/... ./internal/tick/... ./loadtest/...

.PHONY: docs all build run test test-e2e test-dashboards prometheus vet fmt proto js-deps web-deps bench clean help cluster cluster-stop cluster-status test-cluster

all: build

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/herald
	$(GO) build -o $(BIN) ./cmd/herald

run: build web-deps ## the whole system on embedded engines (kfake, SQLite, versitygw); prints URLs and a token
	./$(BIN) dev

js-deps: ## npm packages of the JS end-to-end tests (centrifuge-js, playwright-core for the browser test)
	@if [ ! -d e2e/js/node_modules/playwright-core ] || [ e2e/js/package-lock.json -nt e2e/js/node_modules/.package-lock.json ]; then \
	  npm ci --prefix e2e/js --no-audit --no-fund; fi

# The chat page serves centrifuge-js from its npm package (third-party code
# is not committed): management/webui/package-lock.json pins it. Without npm,
# `make run` still runs; the page then says how to install it.
web-deps: ## npm packages the chat page serves (centrifuge-js into management/webui/node_modules)
	@if ! command -v npm >/dev/null; then echo "npm not found: the chat page will ask for centrifuge-js (apt-get install -y nodejs npm; make web-deps)"; \
	elif [ ! -d management/webui/node_modules/centrifuge ] || [ management/webui/package-lock.json -nt management/webui/node_modules/.package-lock.json ]; then \
	  npm ci --prefix management/webui --no-audit --no-fund; fi

test: js-deps web-deps vet ## the full test suite (unit, conformance, end to end, race)
	$(GO) test -count=1 -timeout 30m ./...
	$(GO) test -count=1 -race -timeout 30m $(RACE_PKGS)

test-e2e: js-deps web-deps ## only the end-to-end tests
	$(GO) test -count=1 -v -timeout 10m ./e2e/

vet: ## gofmt check and go vet
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go' | grep -v '\.pb\.go$$')

docs: ## regenerate docs/configuration.md from the services' flags
	HERALD_UPDATE_DOCS=1 $(GO) test -count=1 -run TestConfigurationDocUpToDate ./cmd/herald/

proto: ## regenerate proto/herald/v1 (protoc from Debian protobuf-compiler + pinned plugins)
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler"; exit 1; }
	GOBIN=$(GOBIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(GOBIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	PATH=$(GOBIN):$$PATH protoc -I proto --go_out=proto --go_opt=paths=source_relative \
	  --go-grpc_out=proto --go-grpc_opt=paths=source_relative proto/herald/v1/herald.proto

prometheus: ## Prometheus for `make run` on 127.0.0.1:9090 (Debian package prometheus)
	prometheus --config.file=dashboards/prometheus.yml --storage.tsdb.path=data/prometheus --web.listen-address=127.0.0.1:9090

test-dashboards: ## every dashboard panel and alert against a real Prometheus
	$(GO) test -count=1 -v -timeout 5m -run TestDashboardsAgainstPrometheus ./dashboards/

# --- BENCH / LOADTEST (bench/README.md, docs/performance.md) ---
.PHONY: loadtest perf-report compare
bench: ## hot-path micro-benchmarks, benchstat-ready (COUNT=5 BENCH=. BENCHTIME= PKGS= FULL=1 OUT=)
	bench/run.sh

loadtest: build ## one scenario against a fresh `herald dev` or URL: SCENARIO=idle|broadcast|chat|churn|recovery [URL=] [ARGS=]
	@test -n "$(SCENARIO)" || { echo "usage: make loadtest SCENARIO=idle|broadcast|chat|churn|recovery [URL=ws://…] [ARGS='--conns 1000 …']"; exit 2; }
	loadtest/scripts/run.sh $(SCENARIO) $(ARGS)

perf-report: build ## standard load test set, regenerates docs/performance.md results (PERF_SCALE=modest|full, PERF_RUNS=)
	loadtest/scripts/perf-report.sh

compare: ## Herald vs Centrifugo v6.9.1 (memory, Redis) side by side, alternating; table into docs/performance.md (QUICK=1: < 5 min; RUNS= SCENARIOS= SERVERS=)
	QUICK=$(QUICK) bench/compare/compare.sh

clean: ## remove build output (not ./data)
	rm -rf bin bench.out

# --- CLUSTER: every service its own process behind nginx (docs/deploy.md) ---
cluster: build ## engines + 2 relays + 2 controllers + management + cacher + nginx (:8000); installs nginx-light if missing
	deploy/cluster.sh start

cluster-stop: ## stop what `make cluster` started (SIGTERM, then wait)
	deploy/cluster.sh stop

cluster-status: ## processes, readiness and nginx counters of `make cluster`
	deploy/cluster.sh status

test-cluster: ## only the multi-process cluster tests behind nginx (deploy/clustertest)
	$(GO) test -count=1 -v -timeout 10m ./deploy/clustertest/
