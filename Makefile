# One entry point for everything a developer runs; the README and .ci/run use it.
# Builds go to one fixed folder outside the clone so that every clone on this machine reuses them.
CARGO_TARGET_DIR ?= $(HOME)/.cache/qianlian/target
export CARGO_TARGET_DIR

.PHONY: setup dev test check bench build

setup:
	@./scripts/setup.sh

build: setup
	cargo build --workspace --locked --bins

# The embedded default: a single node with dev PKI, default policy and sample data.
dev: build
	$(CARGO_TARGET_DIR)/debug/qianlian dev

# Every test: unit, property, storage conformance and end-to-end (real binary, real TLS).
test: build
	cargo test --workspace --locked

# Formatting and lints, as required before every commit.
check: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

# Throughput and latency under load, one node and three nodes (release build; about 5 minutes).
bench: setup
	bench/run.sh
