// Package redistest starts a private redis-server for one test, on a free
// port, and removes it when the test ends. Tests get real Redis semantics
// (Lua, TTLs, concurrency) and may kill their server to test failures.
package redistest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/redisconn"
)

// Server is a running redis-server owned by one test.
type Server struct {
	// Addr is host:port of the server.
	Addr string
	cmd  *exec.Cmd
	t    testing.TB
	tls  bool

	// what Restart needs to start it again
	bin, dir string
	port     int
	extra    []string
	exited   chan error
}

// Start starts a redis-server for t, or skips t when no redis-server binary
// is on PATH. The server stops when t ends.
func Start(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	return startServer(t, false, extraArgs...)
}

// StartTLS starts a redis-server that speaks only TLS, with a self-signed
// certificate: connect with rediss://ADDR/0?skip_verify=true.
func StartTLS(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := selfSigned(cert, key); err != nil {
		t.Fatal(err)
	}
	return startServer(t, true, "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert, "--tls-auth-clients", "no")
}

func startServer(t testing.TB, tls bool, extraArgs ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not found on PATH; install it (apt-get install redis-server) to run this test")
	}
	dir := t.TempDir()
	var lastErr error
	for range 5 {
		port, err := testkit.FreePort()
		if err != nil {
			t.Fatalf("free port: %v", err)
		}
		s, err := start(t, bin, dir, port, tls, extraArgs...)
		if err == nil {
			return s
		}
		lastErr = err // most likely the port was taken in between: try another
	}
	t.Fatalf("start redis-server: %v", lastErr)
	return nil
}

func start(t testing.TB, bin, dir string, port int, tls bool, extraArgs ...string) (*Server, error) {
	logFile := filepath.Join(dir, "redis-"+strconv.Itoa(port)+".log")
	portArgs := []string{"--port", strconv.Itoa(port)}
	if tls {
		portArgs = []string{"--port", "0", "--tls-port", strconv.Itoa(port)}
	}
	args := []string{
		portArgs[0], portArgs[1],
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--logfile", logFile,
	}
	args = append(args, portArgs[2:]...)
	cmd := exec.Command(bin, append(args, extraArgs...)...)
	if err := deathsig.Start(cmd); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, t: t, tls: tls,
		bin: bin, dir: dir, port: port, extra: extraArgs, exited: exited}
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited //nolint:errcheck // killed: its exit error says only that
	})

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("redis-server exited: %w; log: %s", err, tail(logFile))
		default:
		}
		if err := s.ping(); err == nil || strings.Contains(err.Error(), "NOAUTH") {
			return s, nil // NOAUTH: up, and started with --requirepass
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("redis-server on port %d not ready after 10s; log: %s", port, tail(logFile))
}

// URL returns the redis:// (rediss:// for TLS) URL of the server.
func (s *Server) URL() string {
	if s.tls {
		return "rediss://" + s.Addr + "/0?skip_verify=true"
	}
	return "redis://" + s.Addr + "/0"
}

// Client returns a go-redis client of the server, closed when the test ends.
func (s *Server) Client() *redis.Client {
	opts := &redis.Options{Addr: s.Addr}
	if s.tls {
		opts.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	c := redis.NewClient(opts)
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
}

// Restart kills the server and starts it again on the same port, with the
// same arguments and directory (so --appendonly yes keeps its data), and
// waits until it answers, down for at least down.
func (s *Server) Restart(down time.Duration) {
	s.t.Helper()
	s.Kill()
	<-s.exited      //nolint:errcheck // killed
	s.exited <- nil // for the first start's cleanup
	time.Sleep(down)
	n, err := start(s.t, s.bin, s.dir, s.port, s.tls, s.extra...)
	if err != nil {
		s.t.Fatalf("restart redis-server: %v", err)
	}
	s.cmd, s.exited = n.cmd, n.exited
}

func (s *Server) ping() error {
	opts := &redis.Options{Addr: s.Addr, MaxRetries: -1}
	if s.tls {
		opts.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	c := redis.NewClient(opts)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
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

// StartCluster starts a Redis Cluster of n masters (no replicas), each on
// a free port, and returns its redis-cluster:// URL. It skips t when
// redis-server or redis-cli is missing.
func StartCluster(t testing.TB, n int) string {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Skip("redis-cli not found on PATH; install redis-tools to run this test")
	}
	var addrs []string
	for i := range n {
		dir := t.TempDir()
		s := Start(t, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)),
			"--cluster-node-timeout", "2000")
		addrs = append(addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		for {
			out, _ := exec.Command(cli, "-h", "127.0.0.1", "-p", strings.Split(a, ":")[1], "cluster", "info").Output()
			if strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ok after 20s: %s", out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	u := "redis-cluster://" + addrs[0]
	for i, a := range addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + a
	}
	return u
}

// StartClusterClient starts a Redis Cluster of n masters as StartCluster
// does and returns a client of it, closed when t ends.
func StartClusterClient(t testing.TB, n int) redis.UniversalClient {
	t.Helper()
	rdb, err := redisconn.Open(StartCluster(t, n))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Sentinel is a master, a replica and one sentinel watching them.
type Sentinel struct {
	// URL is the redis-sentinel:// URL of the master set "mymaster".
	URL string
	// Addr is the sentinel's host:port.
	Addr string
	// Replica is the server the sentinel promotes on Failover.
	Replica *Server
}

// StartSentinel starts a master, a replica of it and a sentinel (quorum
// 1, master down after 1 s), and returns them. It skips t when
// redis-server is missing.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	master := Start(t)
	_, mport, _ := net.SplitHostPort(master.Addr)
	replica := Start(t, "--replicaof", "127.0.0.1", mport)
	bin, _ := exec.LookPath("redis-server")
	dir := t.TempDir()
	port, err := testkit.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
		"sentinel monitor mymaster 127.0.0.1 %s 1\n"+
		"sentinel down-after-milliseconds mymaster 1000\n"+
		"sentinel failover-timeout mymaster 5000\n",
		port, dir, filepath.Join(dir, "sentinel.log"), mport)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, conf, "--sentinel")
	if err := deathsig.Start(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Sentinel{URL: "redis-sentinel://" + addr + "/0?master_name=mymaster", Addr: addr, Replica: replica}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := redis.NewSentinelClient(&redis.Options{Addr: addr})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		replicas, err := c.Replicas(ctx, "mymaster").Result()
		cancel()
		c.Close()
		if err == nil && len(replicas) == 1 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("sentinel not watching a master with one replica after 10s: %v %v\n%s", replicas, err, tail(filepath.Join(dir, "sentinel.log")))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Failover makes the sentinel promote the replica now.
func (s *Sentinel) Failover(t testing.TB) {
	t.Helper()
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	if err := c.Failover(context.Background(), "mymaster").Err(); err != nil {
		t.Fatalf("sentinel failover: %v", err)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}
