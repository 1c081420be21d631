//go:build unix && !linux

package localredis

import "io"

// maxSocketPath is the longest unix socket path (sun_path less its NUL).
const maxSocketPath = 103

// startChild starts bin under a shell that stops it if this process dies:
// these systems have no parent-death signal.
func startChild(bin string, args []string, out io.Writer) (*child, error) {
	return startWatched(bin, args, out)
}
