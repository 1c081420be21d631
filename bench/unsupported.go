//go:build !linux

// The benchmark harness compares pingfleet with fping on host lists that
// answer inside network namespaces it creates, and reads its processes'
// memory from /proc: all of that is Linux.
package main

import (
	"fmt"
	"os"
	"runtime"
)

func main() {
	fmt.Fprintf(os.Stderr, "bench: needs Linux (fping, network namespaces, /proc), not %s\n", runtime.GOOS)
	os.Exit(1)
}
