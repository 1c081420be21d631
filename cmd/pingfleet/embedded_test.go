package main

// The private Redis of `pingfleet run`: a redis-server child that is gone,
// with its socket, however the command ends; miniredis when none is
// installed.

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/internal/testkit"
)

// redisServersIn returns the PIDs of redis-server processes whose command
// line names dir (the private ones put their socket there).
func redisServersIn(t *testing.T, dir string) []string {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []string
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(args[0], "redis-server") && strings.Contains(string(b), dir) {
			pid := strings.Split(p, "/")[2]
			if stat, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && !strings.Contains(string(stat), ") Z ") {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// checkCleanedUp waits until no private redis-server runs for dir and dir
// is empty.
func checkCleanedUp(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := redisServersIn(t, dir)
		files, _ := os.ReadDir(dir)
		if len(pids) == 0 && len(files) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var names []string
			for _, f := range files {
				names = append(names, f.Name())
			}
			t.Fatalf("10s after the command ended: redis-server processes %v, files in TMPDIR %v; want none", pids, names)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func needRedisServer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not found on PATH")
	}
}

func TestE2EPrivateRedisServer(t *testing.T) {
	t.Parallel()
	needRedisServer(t)
	t.Run("normal exit", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		r := runBinaryEnv(t, []string{"TMPDIR=" + dir}, "run", "127.0.5.1-4", "-p", "20ms", "-o", "json", "--log-level", "info")
		if r.code != ExitOK || !strings.Contains(r.stderr, "private redis-server started") {
			t.Fatalf("exit %d; want 0 on a private redis-server\nstderr: %s", r.code, r.stderr)
		}
		if rep := decodeReport(t, r); rep.Summary.Up != 4 {
			t.Errorf("summary %+v; want 4 up", rep.Summary)
		}
		checkCleanedUp(t, dir)
	})
	t.Run("error exit", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		// A metrics address in use: the worker fails after Redis started.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		r := runBinaryEnv(t, []string{"TMPDIR=" + dir}, "run", "127.0.5.1", "--metrics-addr", l.Addr().String(), "--log-level", "info")
		if r.code != ExitSystem || !strings.Contains(r.stderr, "private redis-server started") {
			t.Fatalf("exit %d; want %d after the private redis-server started\nstderr: %s", r.code, ExitSystem, r.stderr)
		}
		checkCleanedUp(t, dir)
	})
	t.Run("SIGKILL", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		p := startProcEnv(t, []string{"TMPDIR=" + dir}, "run", "127.0.5.1-8", "-c", "60", "-p", "1s", "-o", "json", "--log-level", "info")
		testkit.Eventually(t, 30*time.Second, func() bool {
			return strings.Contains(p.stderr.String(), "worker started") && len(redisServersIn(t, dir)) == 1
		})
		_ = p.cmd.Process.Kill()
		p.ended(t, 30*time.Second, "run still running 30s after SIGKILL")
		checkCleanedUp(t, dir)
	})
}

// Without redis-server on PATH, run takes miniredis, and says what
// redis-server would gain only for batches where it matters.
func TestE2EMiniredisFallback(t *testing.T) {
	t.Parallel()
	env := []string{"PATH=" + t.TempDir()}
	small := runBinaryEnv(t, env, "run", "127.0.5.1", "-o", "json", "--log-level", "info")
	if small.code != ExitOK || !strings.Contains(small.stderr, "miniredis started") {
		t.Fatalf("exit %d; want 0 on miniredis\nstderr: %s", small.code, small.stderr)
	}
	if strings.Contains(small.stderr, "faster") {
		t.Errorf("a 1-host batch was told about redis-server:\n%s", small.stderr)
	}
	large := runBinaryEnv(t, env, append([]string{"run", "-q", "-t", "100ms", "-o", "json"}, strings.Fields(loopbackHosts(slowFallbackHosts, 40))...)...)
	if large.code != ExitOK {
		t.Fatalf("exit %d\nstderr: %s", large.code, large.stderr)
	}
	if n := strings.Count(large.stderr, miniredisFigure); n != 1 || !strings.Contains(large.stderr, "redis-server not found on PATH") {
		t.Errorf("stderr says the measured figure %d times; want once, with the reason:\n%s", n, large.stderr)
	}
	forced := runBinaryEnv(t, env, "run", "127.0.5.1", "--embedded", "redis-server")
	if forced.code != ExitSystem || !strings.Contains(forced.stderr, "redis-server not found") {
		t.Errorf("--embedded redis-server without one: exit %d, stderr %s; want %d and why", forced.code, forced.stderr, ExitSystem)
	}
	bad := runBinaryEnv(t, env, "run", "127.0.5.1", "--embedded", "sqlite")
	if bad.code != ExitUsage || !strings.Contains(bad.stderr, `--embedded "sqlite"`) {
		t.Errorf("--embedded sqlite: exit %d, stderr %s; want %d naming the flag", bad.code, bad.stderr, ExitUsage)
	}
}
