//go:build unix

package localredis

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pingfleet/pingfleet/internal/deathsig"
)

func TestMain(m *testing.M) {
	if os.Getenv("LOCALREDIS_HELPER") != "" {
		helper()
		return
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(deathsig.Spawner))
}

func needRedisServer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not found on PATH; install it to run this test")
	}
}

// use checks that s answers a write and a read.
func use(t *testing.T, s *Server) {
	t.Helper()
	c := redis.NewClient(s.Options())
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET on %s: %v", s.Kind, err)
	}
	if v := c.Get(ctx, "k").Val(); v != "v" {
		t.Fatalf("GET on %s = %q; want v", s.Kind, v)
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestRedisServer(t *testing.T) {
	t.Parallel()
	needRedisServer(t)
	for _, kind := range []Kind{Auto, RedisServer} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s, err := Start(context.Background(), Config{Kind: kind, Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if s.Kind != RedisServer || s.Fallback != "" || !atLeast(s.Version, MinVersion) {
				t.Errorf("Kind %s, Fallback %q, Version %q; want redis-server %s+, no fallback", s.Kind, s.Fallback, s.Version, MinVersion)
			}
			if o := s.Options(); o.Network != "unix" || filepath.Dir(o.Addr) != dir {
				t.Errorf("listens on %s %s; want a unix socket in %s", o.Network, o.Addr, dir)
			}
			use(t, s)
			if n := entries(t, dir); len(n) != 1 || !strings.HasSuffix(n[0], ".sock") {
				t.Errorf("while running, %s holds %v; want only the socket", dir, n)
			}
			pid := serverPID(t, s.Options().Addr)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if n := entries(t, dir); len(n) != 0 {
				t.Errorf("after Close, %s holds %v; want nothing", dir, n)
			}
			if alive(pid) {
				t.Errorf("redis-server %d still runs after Close", pid)
			}
		})
	}
}

// serverPID asks the server at sock for its process ID.
func serverPID(t *testing.T, sock string) int {
	t.Helper()
	c := redis.NewClient(&redis.Options{Network: "unix", Addr: sock})
	defer c.Close()
	info := c.Info(context.Background(), "server").Val()
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			pid, _ := strconv.Atoi(v)
			return pid
		}
	}
	t.Fatalf("no process_id in INFO server: %q", info)
	return 0
}

// alive reports whether pid runs (a zombie waiting for its reaper does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still runs 10s after its parent died", what, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMiniredis(t *testing.T) {
	t.Parallel()
	s, err := Start(context.Background(), Config{Kind: Miniredis})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Kind != Miniredis || s.Fallback != "" {
		t.Errorf("Kind %s, Fallback %q; want miniredis, no fallback", s.Kind, s.Fallback)
	}
	use(t, s)
}

// TestNoBinary runs with a PATH that has no redis-server (not parallel:
// it changes the environment).
func TestNoBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	s, err := Start(context.Background(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Kind != Miniredis || !strings.Contains(s.Fallback, "not found") {
		t.Errorf("Kind %s, Fallback %q; want miniredis because redis-server was not found", s.Kind, s.Fallback)
	}
	use(t, s)
	if _, err := Start(context.Background(), Config{Kind: RedisServer}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("Start(redis-server) without a binary: %v; want a 'not found' error", err)
	}
}

func TestBrokenBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "redis-server")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR (this is a test)'\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Config{Kind: RedisServer, Binary: bin, Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "FATAL CONFIG FILE ERROR") {
		t.Errorf("Start of a failing binary: %v; want its output in the error", err)
	}
	s, err := Start(context.Background(), Config{Binary: bin, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Kind != Miniredis || !strings.Contains(s.Fallback, "exited") {
		t.Errorf("Auto with a failing binary: Kind %s, Fallback %q; want miniredis, saying it exited", s.Kind, s.Fallback)
	}
}

func TestAtLeast(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		version string
		want    bool
	}{
		{"6.2.0", true}, {"6.2", true}, {"7.0.15", true}, {"10.0.0", true},
		{"6.0.16", false}, {"5.0.7", false}, {"6", false},
	} {
		if got := atLeast(tc.version, "6.2"); got != tc.want {
			t.Errorf("atLeast(%q, 6.2) = %v; want %v", tc.version, got, tc.want)
		}
	}
}

// TestChildDiesWithParent starts a helper process that starts a child the
// way Start does (and the way it does on systems without a parent-death
// signal), checks that it is in a process group of its own, kills the
// helper with SIGKILL, and waits for the child to go.
func TestChildDiesWithParent(t *testing.T) {
	t.Parallel()
	cases := []string{"watched"}
	if deathsig.Supported {
		cases = append(cases, "native")
	}
	if _, err := exec.LookPath("redis-server"); err == nil {
		cases = append(cases, "redis-server")
	}
	for _, mode := range cases {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "LOCALREDIS_HELPER="+mode, "LOCALREDIS_DIR="+dir)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("helper: %v", err)
			}
			pid, _ := strconv.Atoi(strings.TrimSpace(line))
			if !alive(pid) {
				t.Fatalf("child %d not running before its parent died", pid)
			}
			// Out of the parent's process group, which a terminal's
			// Ctrl-C signals: the parent ends it, after reading it.
			if pg, err := syscall.Getpgid(pid); err != nil || pg == syscall.Getpgrp() {
				t.Errorf("child %d in process group %d (%v); want one of its own, not its parent's %d", pid, pg, err, syscall.Getpgrp())
			}
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			waitGone(t, pid, mode+" child")
			if mode == "redis-server" {
				deadline := time.Now().Add(5 * time.Second)
				for len(entries(t, dir)) > 0 && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if n := entries(t, dir); len(n) > 0 {
					t.Errorf("after its parent's SIGKILL, %s holds %v; want nothing", dir, n)
				}
			}
		})
	}
}

// helper is the process TestChildDiesWithParent kills: it starts a child,
// prints the child's PID and waits to be killed.
func helper() {
	var pid int
	switch os.Getenv("LOCALREDIS_HELPER") {
	case "watched":
		c, err := startWatched("sleep", []string{"60"}, os.Stderr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		// The shell's child: the sleep itself.
		pid = shellChild(c.cmd.Process.Pid)
	case "native":
		c, err := startChild("sleep", []string{"60"}, os.Stderr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pid = c.cmd.Process.Pid
	case "redis-server":
		s, err := Start(context.Background(), Config{Kind: RedisServer, Dir: os.Getenv("LOCALREDIS_DIR")})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		c := redis.NewClient(s.Options())
		for _, line := range strings.Split(c.Info(context.Background(), "server").Val(), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
				pid, _ = strconv.Atoi(v)
			}
		}
	}
	fmt.Println(pid)
	time.Sleep(time.Minute)
}

// shellChild waits for the shell with PID sh to start its first child
// and returns that child's PID.
func shellChild(sh int) int {
	for range 500 {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", sh, sh))
		if f := strings.Fields(string(b)); len(f) > 0 {
			pid, _ := strconv.Atoi(f[0])
			return pid
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0
}
