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

build:
	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/pingfleet ./cmd/pingfleet

# Man pages, one per command, generated from the commands themselves.
man:
	go run ./cmd/pingfleet man man/
