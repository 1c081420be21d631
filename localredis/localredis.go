// Package localredis runs a private Redis for the life of one command:
// `pingfleet run` without --redis. When a redis-server binary is installed
// it runs one as a child process, listening on a unix socket only, with no
// persistence; otherwise it runs miniredis in the process.
//
// redis-server is the fast choice: miniredis builds a new Lua interpreter
// for every script call (asynq makes three per task) and serves one command
// at a time, which made a 10,000-host batch about ten times slower
// (bench/README.md). The child never outlives the command: it is stopped
// when the Server is closed, and on Linux the kernel sends it SIGTERM if
// the command dies first (even by SIGKILL); elsewhere a shell between the
// two stops it when the command's end of a pipe closes. On SIGTERM
// redis-server removes its socket file, so nothing is left behind.
package localredis

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Kind names a kind of private Redis.
type Kind string

// Kinds of private Redis.
const (
	// Auto runs redis-server when one is installed, else miniredis.
	Auto Kind = "auto"
	// RedisServer runs a redis-server child process.
	RedisServer Kind = "redis-server"
	// Miniredis runs miniredis (an in-process Redis written in Go).
	Miniredis Kind = "miniredis"
)

// ParseKind reads a Kind as the --embedded flag spells it.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case Auto, RedisServer, Miniredis:
		return k, nil
	}
	return "", fmt.Errorf("%q: use auto, redis-server or miniredis", s)
}

// MinVersion is the oldest redis-server asynq works with (its archive
// script uses ZRANGE ... BYSCORE).
const MinVersion = "6.2"

// StartTimeout bounds how long redis-server may take to accept connections.
const StartTimeout = 10 * time.Second

// Config configures Start.
type Config struct {
	// Kind is what to run. If empty, Auto.
	Kind Kind
	// Binary is the redis-server to run. If empty, "redis-server" from PATH.
	Binary string
	// Dir is where the socket file goes. If empty, os.TempDir().
	Dir string
	// Logger receives a line about what runs. If nil, slog.Default().
	Logger *slog.Logger
}

// Server is a running private Redis.
type Server struct {
	// Kind is what runs: RedisServer or Miniredis.
	Kind Kind
	// Fallback says why Auto runs miniredis ("" when it does not).
	Fallback string
	// Version is the Redis version of a redis-server.
	Version string

	opts      *redis.Options
	closeOnce sync.Once
	closeErr  error
	stop      func() error
}

// Start starts the private Redis cfg asks for.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	logger := cmp.Or(cfg.Logger, slog.Default())
	kind := cmp.Or(cfg.Kind, Auto)
	if kind == Miniredis {
		return startMiniredis(logger, "")
	}
	bin := cfg.Binary
	if bin == "" {
		path, err := exec.LookPath("redis-server")
		if err != nil {
			if kind == RedisServer {
				return nil, errors.New("redis-server not found on PATH: install it (apt-get install redis-server, brew install redis) or use --embedded miniredis")
			}
			return startMiniredis(logger, "redis-server not found on PATH")
		}
		bin = path
	}
	s, err := startRedisServer(ctx, bin, cmp.Or(cfg.Dir, os.TempDir()))
	if err != nil {
		if kind == RedisServer {
			return nil, err
		}
		logger.Warn("private redis-server did not start; using miniredis", "error", err)
		return startMiniredis(logger, err.Error())
	}
	logger.Info("private redis-server started", "socket", s.opts.Addr, "version", s.Version)
	return s, nil
}

// Options returns the go-redis options to connect to s.
func (s *Server) Options() *redis.Options {
	o := *s.opts
	return &o
}

// Close stops the server and removes what it left. It is safe to call
// more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.stop() })
	return s.closeErr
}

func startMiniredis(logger *slog.Logger, why string) (*Server, error) {
	m, err := miniredis.Run()
	if err != nil {
		return nil, fmt.Errorf("start miniredis: %w", err)
	}
	logger.Info("miniredis started", "addr", m.Addr(), "fallback", why)
	return &Server{
		Kind:     Miniredis,
		Fallback: why,
		opts:     &redis.Options{Addr: m.Addr()},
		stop:     func() error { m.Close(); return nil },
	}, nil
}

// startRedisServer runs bin on a new unix socket in dir and waits until it
// answers.
func startRedisServer(ctx context.Context, bin, dir string) (*Server, error) {
	tag := make([]byte, 6)
	_, _ = rand.Read(tag)
	sock := filepath.Join(dir, "pingfleet-redis-"+strconv.Itoa(os.Getpid())+"-"+hex.EncodeToString(tag)+".sock")
	if len(sock) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is longer than the %d bytes a unix socket allows: set TMPDIR to a shorter directory", sock, maxSocketPath)
	}
	args := []string{
		"--port", "0", // no TCP listener: only this process's user can connect
		"--unixsocket", sock,
		"--unixsocketperm", "700",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--logfile", "",
		"--loglevel", "warning",
		"--daemonize", "no",
		"--databases", "1",
	}
	out := &tailBuffer{max: 4 << 10}
	p, err := startChild(bin, args, out)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Server{Kind: RedisServer, opts: &redis.Options{Network: "unix", Addr: sock}}
	s.stop = func() error {
		// redis-server acts on SIGTERM at its next cron tick, up to 100 ms
		// later; SHUTDOWN is at once. The signal follows if it fails.
		c := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1, DialTimeout: time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.ShutdownNoSave(ctx).Err() // the connection closes: no reply
		cancel()
		c.Close()
		err := p.stop(5 * time.Second)
		if rerr := os.Remove(sock); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
		return err
	}
	version, err := waitReady(ctx, s.opts, p.exited)
	if err != nil {
		_ = s.stop()
		return nil, fmt.Errorf("%s: %w; its output: %s", bin, err, strings.TrimSpace(out.String()))
	}
	if !atLeast(version, MinVersion) {
		_ = s.stop()
		return nil, fmt.Errorf("%s is Redis %s; pingfleet needs %s or newer", bin, version, MinVersion)
	}
	s.Version = version
	return s, nil
}

// waitReady polls the socket until Redis accepts a connection, the child
// exits or the start timeout passes, and returns the server's version. It
// dials directly (a go-redis client that failed to dial waits before it
// tries again), every half millisecond: redis-server listens about 10 ms
// after it starts.
func waitReady(ctx context.Context, opts *redis.Options, exited <-chan struct{}) (string, error) {
	deadline := time.Now().Add(StartTimeout)
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, opts.Network, opts.Addr)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case <-exited:
			return "", errors.New("exited before accepting connections")
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Microsecond):
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("not accepting connections after %s: %w", StartTimeout, err)
		}
	}
	o := *opts
	o.MaxRetries = -1
	c := redis.NewClient(&o)
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v, nil
		}
	}
	return "", errors.New("INFO server has no redis_version")
}

// atLeast reports whether version (major.minor.patch) is min or newer.
func atLeast(version, min string) bool {
	v, m := strings.Split(version, "."), strings.Split(min, ".")
	for i := range m {
		if i >= len(v) {
			return false
		}
		a, _ := strconv.Atoi(v[i])
		b, _ := strconv.Atoi(m[i])
		if a != b {
			return a > b
		}
	}
	return true
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
