package localredis

import (
	"io"
	"os/exec"
	"syscall"

	"github.com/pingfleet/pingfleet/internal/deathsig"
)

// maxSocketPath is the longest unix socket path (sun_path less its NUL).
const maxSocketPath = 107

// startChild starts bin in a process group of its own (see ownGroup); the
// kernel sends it SIGTERM if this process dies.
func startChild(bin string, args []string, out io.Writer) (*child, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = ownGroup()
	if err := deathsig.StartSignal(cmd, syscall.SIGTERM); err != nil {
		return nil, err
	}
	return newChild(cmd), nil
}
