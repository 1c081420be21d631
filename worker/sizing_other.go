//go:build !unix

package worker

// OpenFileLimit is the process's limit on open files (the soft limit,
// which the Go runtime raises to the hard one), 0 if unknown.
func OpenFileLimit() uint64 { return 0 }
