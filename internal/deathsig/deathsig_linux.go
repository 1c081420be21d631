package deathsig

import (
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// Supported reports whether children started here are signalled when this
// process dies.
const Supported = true

type request struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	requests  = make(chan request)
)

func start(cmd *exec.Cmd, sig os.Signal) error {
	spawnOnce.Do(func() { go spawn() })
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = sig.(syscall.Signal)
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
