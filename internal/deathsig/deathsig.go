// Package deathsig starts child processes that are killed when this
// process dies, so that a crashed or timed-out test run leaves no
// redis-server or worker behind.
//
// Linux sends the parent-death signal (PR_SET_PDEATHSIG) when the thread
// that forked the child exits, not the process (golang/go#27505). The Go
// runtime ends a thread when a goroutine locked to it returns, as
// lab.Lab.Do does to discard a thread moved into a network namespace; a
// child forked earlier from that thread would be killed at that moment.
// Start therefore forks every child from one goroutine locked to its
// thread for the life of the process.
package deathsig

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

type request struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	requests  = make(chan request)
)

// Start starts cmd like cmd.Start, and has the kernel send it SIGKILL
// when this process ends.
func Start(cmd *exec.Cmd) error {
	spawnOnce.Do(func() { go spawn() })
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	r := request{cmd, make(chan error, 1)}
	requests <- r
	return <-r.done
}

// spawn owns the forking thread. It never returns, so the thread lives as
// long as the process and no other goroutine ever runs on it.
func spawn() {
	runtime.LockOSThread()
	for r := range requests {
		r.done <- r.cmd.Start()
	}
}

// Spawner names the goroutine Start leaves running, for
// goleak.IgnoreTopFunction in the tests of packages that start children.
const Spawner = "github.com/pingfleet/pingfleet/internal/deathsig.spawn"
