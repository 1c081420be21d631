package ping

import (
	"errors"
	"fmt"
	"syscall"
)

// FreeBSD has no ping sockets: only raw ones, which need root. The refusal
// wraps EPERM so that SocketAuto goes on with raw sockets.
const (
	pingSockets    = false
	kernelSetsID   = false
	permissionHint = " (FreeBSD has raw ICMP sockets only: run as root)"
	ipStripHeader  = 0 // unused: no ping sockets
)

var (
	errNoPingSockets = fmt.Errorf("FreeBSD has no unprivileged ICMP sockets: %w", syscall.EPERM)
	errNoMark        = errors.New("packet marks (SO_MARK) are Linux only")
)

// bindToInterface refuses: FreeBSD has no per-socket interface binding.
func bindToInterface(int, bool, string) error {
	return errors.New("not supported on FreeBSD: use the interface's address as the source")
}
