# AgentVoiceBox. The two commands a newcomer needs:
#   make dev    run the platform locally (Postgres, Redis, Temporal, SpiceDB, avb on :8080)
#   make test   run every check CI runs
#
# Tools are pinned here and installed once into ./bin (never globally).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin
export PATH := $(BIN):$(BIN)/npm/node_modules/.bin:$(PATH)
export AVB_TOOLS_DIR := $(BIN)

# Pinned tool versions. Changing one reinstalls it on the next run.
BUF_VERSION               := v1.75.0
PROTOC_GEN_GO_VERSION     := v1.36.12
PROTOC_GEN_CONNECT_VERSION := v1.21.1
PROTOC_GEN_ES_VERSION     := 2.17.0
GOOGLE_PROTO_FILES_VERSION := 6.0.1
GNOSTIC_VERSION           := v0.7.1
PROTOVALIDATE_VERSION     := v1.2.2
TEMPORAL_CLI_VERSION      := v1.5.1
SPICEDB_VERSION           := v1.56.2
# Vault's version is pinned in tools/vault/go.mod (its sdk replaced by v0.20.0).
VAULT_VERSION             := v1.21.0

STAMP := $(BIN)/.versions
GO_TOOL_STAMPS := \
	$(STAMP)/buf@$(BUF_VERSION) \
	$(STAMP)/protoc-gen-go@$(PROTOC_GEN_GO_VERSION) \
	$(STAMP)/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_VERSION) \
	$(STAMP)/protoc-gen-openapi@$(GNOSTIC_VERSION)
SERVICE_TOOL_STAMPS := \
	$(STAMP)/temporal@$(TEMPORAL_CLI_VERSION) \
	$(STAMP)/spicedb@$(SPICEDB_VERSION)
# Vault is for the tests only (so far): make dev does not wait for its build.
TEST_TOOL_STAMPS := $(STAMP)/vault@$(VAULT_VERSION)
NPM_TOOL_STAMPS := $(STAMP)/protoc-gen-es@$(PROTOC_GEN_ES_VERSION)+google-proto-files@$(GOOGLE_PROTO_FILES_VERSION)

VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
GO_FILES = $(shell git ls-files --cached --others --exclude-standard '*.go' | grep -v '^gen/')

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- tools

$(STAMP)/buf@%:
	@echo "installing buf $* into ./bin"
	@GOBIN=$(BIN) go install github.com/bufbuild/buf/cmd/buf@$*
	@mkdir -p $(STAMP) && rm -f $(STAMP)/buf@* && touch $@

$(STAMP)/protoc-gen-go@%:
	@echo "installing protoc-gen-go $* into ./bin"
	@GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$*
	@mkdir -p $(STAMP) && rm -f $(STAMP)/protoc-gen-go@* && touch $@

$(STAMP)/protoc-gen-connect-go@%:
	@echo "installing protoc-gen-connect-go $* into ./bin"
	@GOBIN=$(BIN) go install connectrpc.com/connect/cmd/protoc-gen-connect-go@$*
	@mkdir -p $(STAMP) && rm -f $(STAMP)/protoc-gen-connect-go@* && touch $@

$(STAMP)/protoc-gen-openapi@%:
	@echo "installing protoc-gen-openapi (gnostic) $* into ./bin"
	@GOBIN=$(BIN) go install github.com/google/gnostic/cmd/protoc-gen-openapi@$*
	@mkdir -p $(STAMP) && rm -f $(STAMP)/protoc-gen-openapi@* && touch $@

# protoc-gen-es, and google-proto-files for the google/api/*.proto the
# contract's HTTP annotations import.
$(STAMP)/protoc-gen-es@%:
	@command -v npm >/dev/null || { echo "npm is missing: run  apt-get install -y nodejs npm" >&2; exit 1; }
	@echo "installing protoc-gen-es $(PROTOC_GEN_ES_VERSION) and google-proto-files $(GOOGLE_PROTO_FILES_VERSION) into ./bin/npm"
	@mkdir -p $(BIN)/npm && npm install --silent --no-audit --no-fund --prefix $(BIN)/npm \
		@bufbuild/protoc-gen-es@$(PROTOC_GEN_ES_VERSION) @bufbuild/protobuf@$(PROTOC_GEN_ES_VERSION) \
		google-proto-files@$(GOOGLE_PROTO_FILES_VERSION)
	@mkdir -p $(STAMP) && rm -f $(STAMP)/protoc-gen-es@* && touch $@

# The Temporal CLI, SpiceDB and Vault: one already on PATH at the pinned
# version (Homebrew, a release binary) is used as is; otherwise they are built
# from source, which always works but takes minutes on a cold cache.
$(STAMP)/temporal@%:
	@scripts/tool-from-path.sh $(BIN) temporal $* --version || { \
	  echo "installing the Temporal CLI $* into ./bin from source (first time only: a few minutes)"; \
	  GOBIN=$(BIN) go install github.com/temporalio/cli/cmd/temporal@$*; }
	@mkdir -p $(STAMP) && rm -f $(STAMP)/temporal@* && touch $@

$(STAMP)/spicedb@%:
	@scripts/tool-from-path.sh $(BIN) spicedb $* version || { \
	  echo "installing SpiceDB $* into ./bin from source (first time only: a few minutes)"; \
	  GOBIN=$(BIN) go install github.com/authzed/spicedb/cmd/spicedb@$*; }
	@mkdir -p $(STAMP) && rm -f $(STAMP)/spicedb@* && touch $@

# Vault cannot be go-installed (replace directives), so a small module of our
# own builds it; a test and development tool, never linked into avb.
$(STAMP)/vault@%: tools/vault/go.mod tools/vault/go.sum tools/vault/main.go
	@scripts/tool-from-path.sh $(BIN) vault $* version || { \
	  echo "building HashiCorp Vault $* into ./bin from source (first time only: about 15 minutes, a 500 MB binary)"; \
	  cd tools/vault && go build -o $(BIN)/vault .; }
	@mkdir -p $(STAMP) && rm -f $(STAMP)/vault@* && touch $@

.PHONY: tools
tools: $(GO_TOOL_STAMPS) $(NPM_TOOL_STAMPS) $(SERVICE_TOOL_STAMPS) $(TEST_TOOL_STAMPS) ## install every pinned tool into ./bin

# ---------------------------------------------------------------- contract

.PHONY: generate
generate: $(GO_TOOL_STAMPS) $(NPM_TOOL_STAMPS) ## regenerate gen/ from proto/ (and vendor validate.proto)
	@scripts/generate.sh $(PROTOVALIDATE_VERSION) .

.PHONY: check-generate
check-generate: $(GO_TOOL_STAMPS) $(NPM_TOOL_STAMPS) ## fail if gen/ is not what the protos generate
	@scripts/check-generate.sh $(PROTOVALIDATE_VERSION)

.PHONY: lint
lint: $(GO_TOOL_STAMPS) ## gofmt, go vet, buf lint
	@bad=$$(gofmt -l $(GO_FILES)); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	go vet ./...
	cd deploy && go vet ./...
	buf lint

# ---------------------------------------------------------------- run and test

# ---------------------------------------------------------------- web

# node_modules follows package-lock.json (npm ci, pinned versions).
node_modules/.installed: package-lock.json package.json sdk/ts/package.json web/package.json
	@command -v npm >/dev/null || { echo "npm is missing: run  apt-get install -y nodejs npm" >&2; exit 1; }
	@echo "installing the web toolchain (npm ci)"
	@npm ci --silent --no-audit --no-fund
	@touch $@

.PHONY: web
web: node_modules/.installed ## build the TypeScript SDK, the console and the docs page (web/dist)
	@node scripts/build-web.mjs

.PHONY: build
build: web ## build ./bin/avb (with the console and docs built in)
	@go build -o $(BIN)/avb ./cmd/avb

.PHONY: image
image: ## build the container image avb:$(VERSION) from deploy/Dockerfile (needs Docker)
	@command -v docker >/dev/null || { echo "docker is missing: the image builds where Docker runs (CI checks deploy/Dockerfile with BuildKit's parser)" >&2; exit 1; }
	docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) -t avb:$(VERSION) .

.PHONY: deps
deps: ## make sure Postgres and Redis answer on their local ports (starts or explains)
	@scripts/ensure-services.sh

.PHONY: dev
dev: $(GO_TOOL_STAMPS) $(NPM_TOOL_STAMPS) $(SERVICE_TOOL_STAMPS) deps build ## run the whole platform locally on :8080 (Ctrl-C stops it)
	@$(BIN)/avb dev

.PHONY: test-deps
test-deps:
	@scripts/ensure-services.sh test

.PHONY: test
test: tools test-deps lint check-generate web ## everything CI checks: format, vet, lint, generated code, tests
	go test -race -count=1 -timeout 15m ./...
	@command -v promtool >/dev/null || { echo "promtool is missing (deploy/ checks Prometheus rules with it): run  apt-get install -y prometheus" >&2; exit 1; }
	cd deploy && go test -count=1 -timeout 5m ./...

.PHONY: chaos
chaos: tools test-deps ## a 60 s chaos run: calls and API traffic while faults hit every dependency at random
	AVB_CHAOS_DURATION=$${AVB_CHAOS_DURATION:-60s} go test -race -count=1 -timeout 15m -run '^TestChaos$$' -v ./app

.PHONY: bench
bench: tools deps ## benchmarks (allocations reported)
	go test -run '^$$' -bench . -benchmem ./...
