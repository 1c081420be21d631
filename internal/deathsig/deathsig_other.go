//go:build !linux

package deathsig

import (
	"os"
	"os/exec"
)

// Supported reports whether children started here are signalled when this
// process dies: not on this system.
const Supported = false

func start(cmd *exec.Cmd, _ os.Signal) error { return cmd.Start() }
