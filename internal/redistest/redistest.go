// Package redistest starts a private redis-server for one test, on a free
// port, and removes it when the test ends. Tests get real Redis semantics
// (Lua, TTLs, concurrency) and may kill their server to test failures.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a running redis-server owned by one test.
type Server struct {
	// Addr is host:port of the server.
	Addr string
	cmd  *exec.Cmd
	t    testing.TB
}

// Start starts a redis-server for t, or skips t when no redis-server binary
// is on PATH. The server stops when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not found on PATH; install it (apt-get install redis-server) to run this test")
	}
	dir := t.TempDir()
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		s, err := start(t, bin, dir, port)
		if err == nil {
			return s
		}
		lastErr = err // most likely the port was taken in between: try another
	}
	t.Fatalf("start redis-server: %v", lastErr)
	return nil
}

func start(t testing.TB, bin, dir string, port int) (*Server, error) {
	logFile := filepath.Join(dir, "redis-"+strconv.Itoa(port)+".log")
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--logfile", logFile,
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, t: t}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("redis-server exited: %v; log: %s", err, tail(logFile))
		default:
		}
		if s.ping() == nil {
			return s, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("redis-server on port %d not ready after 10s; log: %s", port, tail(logFile))
}

// URL returns the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Client returns a go-redis client of the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
}

func (s *Server) ping() error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 10 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
