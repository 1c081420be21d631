# The README's test command is `make test`.
.PHONY: test test-short fuzz build man

test:
	go test -race -timeout 20m ./...
	# Memory budgets, measured on the binary that ships: the race
	# detector's larger frames would break them.
	go test -count=1 -run Budget ./worker

test-short:
	go test -short ./...

fuzz:
	go test ./enqueuer -run '^$$' -fuzz FuzzParseHosts -fuzztime 60s

# The version and commit from git, for builds that lack Go's VCS stamp.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null)

build:
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w -X main.buildVersion=$(VERSION) -X main.buildCommit=$(COMMIT)' -o bin/pingfleet ./cmd/pingfleet

# Man pages, one per command, generated from the commands themselves.
man:
	go run ./cmd/pingfleet man man/
