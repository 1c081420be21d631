//go:build unix

package worker

import "syscall"

// OpenFileLimit is the process's limit on open files (the soft limit,
// which the Go runtime raises to the hard one), 0 if unknown.
func OpenFileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return unsigned(l.Cur)
}

// unsigned converts a limit: Rlimit.Cur is a uint64 on Linux and macOS, an
// int64 on FreeBSD.
func unsigned[T int64 | uint64](v T) uint64 { return uint64(max(v, 0)) }
