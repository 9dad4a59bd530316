# The two commands a newcomer needs:
#   make dev    run pgoutbox against a throwaway local stack (PostgreSQL + a Kafka-protocol broker)
#   make test   run every test: unit, integration (real PostgreSQL + kfake, and a subset on
#               real Apache Kafka and Debezium), fault injection, fuzz
GO      ?= go
BIN     := bin/pgoutbox
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: build dev test test-unit bench soak clean jvm

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) .

# KAFKA=real runs a real Apache Kafka broker (Java 17 and Maven needed) instead of kfake.
KAFKA ?= kfake

dev: build
	$(GO) build -o bin/devstack ./internal/devstack
	bin/devstack -pgoutbox $(BIN) -kafka $(KAFKA)

# The jars of Apache Kafka and Kafka Connect with Debezium that the real-broker and
# Debezium tests run, from Maven Central into ~/.cache/pgoutbox-jvm (quick when warm).
jvm:
	internal/jvm/resolve.sh >/dev/null

# The integration tests run a race-detector build of pgoutbox (E2E_RACE) and fail on
# any race it reports. Most run against kfake; the real-broker subset and the Debezium
# compatibility test run Apache Kafka and Debezium (see jvm).
test: build jvm
	$(GO) vet ./...
	E2E_RACE=1 $(GO) test -count=1 -timeout 40m ./...
	$(GO) test -count=1 -race ./decoder/ ./ledger/ ./outbox/ ./checkpoint/ ./relay/ ./sink/ ./metrics/
	$(GO) test ./decoder/ -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime 20s
	$(GO) test ./ledger/ -run '^$$' -fuzz '^FuzzLedger$$' -fuzztime 10s

# Backlog drain versus pg_recvlogical, pgoutbox's Kafka side alone (its client's CPU
# floor), live latency at 2,000 ev/s and at 5,000 ev/s beside the walsender's own
# floor (pg_recvlogical with test_decoding), peak RSS, and Debezium on the same
# backlog (real Kafka); writes bench/results.md, drain.png and latency.png. The
# jars are resolved first (as in jvm); if that fails the other cases still run and
# the debezium case reports why it could not.
bench: build
	-internal/jvm/resolve.sh >/dev/null
	$(GO) run ./bench -pgoutbox $(BIN)

# The soak: both modes for SOAK_DURATION each under mixed live writers and random
# faults (kill -9, PostgreSQL restarts, a paused broker, SIGSTOP past
# wal_sender_timeout). make test runs a short version.
SOAK_DURATION ?= 5m
soak: build
	SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -timeout 60m ./e2e -run '^TestSoak$$' -v

# Only the fast tests that need no PostgreSQL.
test-unit:
	$(GO) test -count=1 ./decoder/ ./ledger/ ./outbox/ ./sink/ ./source/ ./metrics/ ./relay/

clean:
	rm -rf bin
