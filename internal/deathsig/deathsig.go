// Package deathsig starts child processes that are signalled when this
// process dies, so that a crashed or killed command leaves no redis-server
// or worker behind.
//
// On Linux the kernel sends the parent-death signal (PR_SET_PDEATHSIG).
// It does so when the thread that forked the child exits, not the process
// (golang/go#27505). The Go runtime ends a thread when a goroutine locked
// to it returns, as lab.Lab.Do does to discard a thread moved into a
// network namespace; a child forked earlier from that thread would be
// signalled at that moment. Start therefore forks every child from one
// goroutine locked to its thread for the life of the process.
//
// Other systems have no parent-death signal: there Start only starts the
// child (Supported reports false), and callers that must not leave one
// behind watch for their parent themselves (see localredis).
package deathsig

import (
	"os"
	"os/exec"
	"syscall"
)

// Spawner names the goroutine Start leaves running, for
// goleak.IgnoreTopFunction in the tests of packages that start children.
const Spawner = "github.com/pingfleet/pingfleet/internal/deathsig.spawn"

// Start starts cmd like cmd.Start, and has the kernel send it SIGKILL
// when this process ends.
func Start(cmd *exec.Cmd) error { return StartSignal(cmd, syscall.SIGKILL) }

// StartSignal is Start with another signal: SIGTERM lets a server shut
// down cleanly (redis-server then removes its socket file).
func StartSignal(cmd *exec.Cmd, sig os.Signal) error { return start(cmd, sig) }
