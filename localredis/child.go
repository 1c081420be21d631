//go:build unix

package localredis

import (
	"io"
	"os/exec"
	"syscall"
	"time"
)

// child is a running redis-server (or, where the kernel has no
// parent-death signal, the shell that watches it).
type child struct {
	cmd    *exec.Cmd
	stdin  io.Closer // the watching shell's stdin: closing it stops the server
	exited chan struct{}
}

func newChild(cmd *exec.Cmd) *child {
	c := &child{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	return c
}

// stop waits a moment for the process to end, then asks it to (SIGTERM:
// redis-server then removes its socket) and kills it if it has not within
// timeout.
func (c *child) stop(timeout time.Duration) error {
	select {
	case <-c.exited:
	case <-time.After(20 * time.Millisecond):
	}
	if c.stdin != nil {
		_ = c.stdin.Close()
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return nil
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		<-c.exited
		return nil
	}
}

// ownGroup puts the private Redis in a process group of its own: a Ctrl-C
// on the terminal signals the command's group, and the command, not the
// terminal, ends its Redis, after reading the results so far from it.
func ownGroup() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// watchScript runs the server ("$@") and stops it with SIGTERM as soon as
// its own standard input reaches end of file: when the parent closes the
// pipe, or dies, whatever killed it. It exits when the server does.
const watchScript = `exec 3<&0
"$@" </dev/null 3<&- &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' TERM INT HUP
( read _ <&3; kill -TERM $pid 2>/dev/null ) &
wait $pid
status=$?
wait $pid 2>/dev/null
exit $status`

// startWatched starts bin under a /bin/sh that stops it when this process
// goes away, for systems without a parent-death signal.
func startWatched(bin string, args []string, out io.Writer) (*child, error) {
	cmd := exec.Command("/bin/sh", append([]string{"-c", watchScript, "sh", bin}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = ownGroup()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		in.Close()
		return nil, err
	}
	c := newChild(cmd)
	c.stdin = in
	return c, nil
}
