//go:build unix

package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/testkit"
)

// Ctrl-C of run on its private redis-server: the terminal signals the
// whole foreground group, yet run, not the signal, ends its Redis, after
// printing every host's figures so far.
func TestE2EPrivateRedisServerCtrlC(t *testing.T) {
	t.Parallel()
	needRedisServer(t)
	dir := t.TempDir()
	// Four at a time, 2 s each: interrupted once the first four are
	// done, while the next four are being pinged. In a process group of
	// its own, signalled whole, as a terminal's Ctrl-C signals the
	// foreground group.
	p := startExecAttr(t, binary(t), []string{"TMPDIR=" + dir}, &syscall.SysProcAttr{Setpgid: true}, "run", "127.0.5.1-8", "-c", "3", "-p", "1s", "--concurrency", "4",
		"-o", "json", "--progress-interval", "50ms", "--log-level", "info")
	testkit.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(p.stderr.String(), ": 4 of 8 done") && len(redisServersIn(t, dir)) == 1
	})
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
	p.ended(t, 30*time.Second, "run still running 30s after SIGINT")
	// As a shell reports SIGINT, saying what became of the batch; and,
	// as fping does, every host's figures so far, the others cancelled.
	if code := p.cmd.ProcessState.ExitCode(); code != ExitInterrupted || !strings.Contains(p.stderr.String(), "ended with this command (its private Redis is gone); 4 of its 8 hosts were not pinged and are reported cancelled") {
		t.Errorf("run after SIGINT: exit %d, stderr:\n%s\nwant 130 and what became of the batch", code, p.stderr.String())
	}
	rep := decodeReport(t, cliResult{stdout: p.stdout.String(), stderr: p.stderr.String()})
	statuses := map[aggregator.Status]int{}
	for _, r := range rep.Results {
		statuses[r.Status]++
	}
	if s := rep.Summary; len(rep.Results) != 8 || statuses[aggregator.StatusUp] != 4 || statuses[aggregator.StatusCancelled] != 4 ||
		s.Up != 4 || s.Cancelled != 4 || s.State != aggregator.StateCancelled {
		t.Errorf("report after SIGINT: %d results %v, summary %+v; want 4 up and 4 cancelled", len(rep.Results), statuses, s)
	}
	checkCleanedUp(t, dir)
}
