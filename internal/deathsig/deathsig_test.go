//go:build linux

package deathsig

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// onEndingThread calls fn on a thread that ends when fn returns: a
// goroutine that returns while locked to its thread takes the thread with
// it, except the main thread, which the runtime keeps. So a goroutine that
// finds itself on the main thread holds it while another one tries.
func onEndingThread(fn func()) {
	done := make(chan struct{})
	var try func()
	try = func() {
		runtime.LockOSThread()
		if syscall.Gettid() == syscall.Getpid() {
			go try()
			<-done
			runtime.UnlockOSThread()
			return
		}
		fn()
		close(done)
	}
	go try()
	<-done
}

// startOnEndingThread starts a long sleep with start from a thread that
// ends right after, and returns a channel closed when the child exits.
func startOnEndingThread(t *testing.T, start func(*exec.Cmd) error) <-chan struct{} {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	var err error
	onEndingThread(func() { err = start(cmd) })
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return exited
}

func TestChildOutlivesForkingThread(t *testing.T) {
	// The hazard itself: a plain Start with Pdeathsig from that thread.
	plain := startOnEndingThread(t, func(cmd *exec.Cmd) error {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		return cmd.Start()
	})
	select {
	case <-plain:
	case <-time.After(10 * time.Second):
		t.Fatal("control child outlived its forking thread; the test no longer shows the hazard")
	}

	var ours []<-chan struct{}
	for range 4 {
		ours = append(ours, startOnEndingThread(t, Start))
	}
	// The threads that called Start have ended; the control above shows
	// how soon the kernel signals.
	grace := time.After(2 * time.Second)
	for i, exited := range ours {
		select {
		case <-exited:
			t.Errorf("child %d died with a thread that did not fork it", i)
		case <-grace:
			return
		}
	}
}
