package main

// End-to-end tests of the built binary: real redis-server, several worker
// processes, real ICMP on 127.0.0.0/8.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/pingfleet/pingfleet/worker"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// binary builds cmd/pingfleet once per test run.
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "pingfleet-e2e-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "pingfleet")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func cleanupBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// proc is a running pingfleet process.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *testkit.SyncBuffer
	done           chan struct{}
}

// startWorker starts `pingfleet worker` against redisURL; it is stopped
// with SIGTERM when the test ends.
func startWorker(t *testing.T, redisURL string, args ...string) *proc {
	t.Helper()
	return startProc(t, append([]string{"worker", "--redis", redisURL, "--log-level", "info"}, args...)...)
}

// ended waits up to within for p to exit, and fails the test with msg if
// it has not.
func (p *proc) ended(t *testing.T, within time.Duration, msg string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatal(msg)
	}
}

// startProc starts the binary with args; it gets SIGTERM when the test
// ends, must stop within 30 s, and its log is shown if the test failed.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, nil, args...)
}

// startProcEnv is startProc with env added to the environment.
func startProcEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startExec(t, binary(t), env, args...)
}

// startExec is startProcEnv for any program: path with args.
func startExec(t *testing.T, path string, env []string, args ...string) *proc {
	t.Helper()
	return startExecAttr(t, path, env, nil, args...)
}

// startExecAttr is startExec with the process attributes attr.
func startExecAttr(t *testing.T, path string, env []string, attr *syscall.SysProcAttr, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(path, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = attr
	p := &proc{cmd: cmd, stdout: &testkit.SyncBuffer{}, stderr: &testkit.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := deathsig.Start(cmd); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// How it ended before this SIGTERM, if it had, tells a crash
		// (or a stray SIGKILL) from a hang.
		early := "running at the end of the test"
		select {
		case <-p.done:
			early = "had ended before the end of the test: " + cmd.ProcessState.String()
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
			t.Errorf("%s did not stop within 30s of SIGTERM; log:\n%s", args[0], p.stderr)
		}
		if t.Failed() {
			t.Logf("%s %d (%s) log:\n%s", args[0], cmd.Process.Pid, early, p.stderr)
		}
	})
	return p
}

// runBinary runs the binary to completion.
func runBinary(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	return runBinaryIn(t, nil, stdin, args...)
}

// runBinaryEnv runs the binary to completion with env added to its
// environment.
func runBinaryEnv(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	return runBinaryIn(t, env, "", args...)
}

func runBinaryIn(t *testing.T, env []string, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return cliResult{code, out.String(), errOut.String()}
}

// ndjsonReport splits `-o ndjson` output into results and the summary.
func ndjsonReport(t *testing.T, out string) ([]aggregator.Result, aggregator.Summary) {
	t.Helper()
	var results []aggregator.Result
	var sum aggregator.Summary
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if bytes.HasPrefix(line, []byte(`{"summary"`)) {
			var wrap struct{ Summary aggregator.Summary }
			if err := json.Unmarshal(line, &wrap); err != nil {
				t.Fatal(err)
			}
			sum = wrap.Summary
			continue
		}
		var r aggregator.Result
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		results = append(results, r)
	}
	return results, sum
}

func loopbackHosts(n, thirdOctetBase int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "127.%d.%d.%d\n", 10+thirdOctetBase+i/(250*250), (i/250)%250, i%250+1)
	}
	return b.String()
}

// checkExactlyOnce asserts every host appears once with the wanted status
// and that the summary adds up.
func checkExactlyOnce(t *testing.T, hostList string, results []aggregator.Result, sum aggregator.Summary, status aggregator.Status) {
	t.Helper()
	want := strings.Fields(hostList)
	seen := make(map[string]int, len(results))
	sent, recv := 0, 0
	for _, r := range results {
		seen[r.Host]++
		sent += r.Sent
		recv += r.Received
		if r.Status != status {
			t.Errorf("host %s: status %s; want %s (%+v)", r.Host, r.Status, status, r)
		}
	}
	for _, h := range want {
		if seen[h] != 1 {
			t.Errorf("host %s appears %d times; want 1", h, seen[h])
		}
	}
	if len(results) != len(want) {
		t.Errorf("%d results; want %d", len(results), len(want))
	}
	if sum.Total != len(want) || sum.Done != sum.Total || sum.Pending != 0 || sum.Up+sum.Down+sum.Error != sum.Total ||
		sum.Sent != sent || sum.Received != recv || sum.State != aggregator.StateComplete {
		t.Errorf("summary does not add up: %+v (results: sent %d, received %d)", sum, sent, recv)
	}
}

func TestE2ETwoWorkers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	startWorker(t, srv.URL(), "--concurrency", "500")
	startWorker(t, srv.URL(), "--concurrency", "500")

	hosts := loopbackHosts(1000, 0)
	// -t 3s: what this test checks is that two workers share a batch
	// exactly once; CI once saw a loopback reply later than the default
	// 500 ms while the race detector and the other packages' tests
	// starved the workers (exit 1: a host down).
	r := runBinary(t, hosts, "enqueue", "--redis", srv.URL(), "-", "--count", "2", "-p", "50ms", "-t", "3s", "--wait", "-o", "ndjson")
	if r.code != ExitOK {
		t.Fatalf("enqueue --wait: exit %d; stderr:\n%s", r.code, r.stderr)
	}
	results, sum := ndjsonReport(t, r.stdout)
	checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
	if sum.Sent != 2000 || sum.Received != 2000 || sum.LossPct != 0 {
		t.Errorf("summary packets: %d sent, %d received, %.1f%% loss; want 2000, 2000, 0", sum.Sent, sum.Received, sum.LossPct)
	}

	// A second batch with names that cannot resolve: errors, exit code 2.
	r = runBinary(t, "", "enqueue", "--redis", srv.URL(), "127.0.0.1", "a.invalid", "b.invalid", "127.0.0.2", "--wait", "-o", "ndjson")
	if r.code != ExitUnresolved {
		t.Fatalf("batch with unresolvable hosts: exit %d; want 2\nstderr: %s", r.code, r.stderr)
	}
	results, sum = ndjsonReport(t, r.stdout)
	got := map[string]aggregator.Status{}
	for _, res := range results {
		got[res.Host] = res.Status
	}
	want := map[string]aggregator.Status{"127.0.0.1": "up", "a.invalid": "error", "b.invalid": "error", "127.0.0.2": "up"}
	if fmt.Sprint(got) != fmt.Sprint(want) || sum.Error != 2 || sum.Up != 2 {
		t.Errorf("statuses %v, summary %+v; want %v", got, sum, want)
	}
}

func TestE2EReenqueueAddsNoTasks(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	queued := func() int {
		queues, err := tasks.PingQueues(context.Background(), srv.Client(), tasks.DefaultShards)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, q := range queues {
			n += int(srv.Client().LLen(context.Background(), tasks.AsynqKeys(q)+":pending").Val())
		}
		return n
	}
	hosts := loopbackHosts(200, 50)
	args := []string{"enqueue", "--redis", srv.URL(), "--batch-id", "nightly-1", "-", "-c", "1"}
	for i, wantStderr := range []string{"", "batch nightly-1 existed: 0 tasks added, 200 already queued or done"} {
		r := runBinary(t, hosts, args...)
		if r.code != ExitOK || strings.TrimSpace(r.stdout) != "nightly-1" || !strings.Contains(r.stderr, wantStderr) {
			t.Fatalf("enqueue #%d: exit %d, stdout %q, stderr %q", i+1, r.code, r.stdout, r.stderr)
		}
		if n := queued(); n != 200 {
			t.Fatalf("after enqueue #%d: %d tasks queued; want 200", i+1, n)
		}
	}
	// The same ID with other hosts is refused.
	r := runBinary(t, "127.0.0.1\n", args...)
	if r.code != ExitUsage || !strings.Contains(r.stderr, "already used by another batch") {
		t.Errorf("enqueue of other hosts under a used ID: exit %d, stderr %s", r.code, r.stderr)
	}
	// Workers then finish it, each host once.
	startWorker(t, srv.URL())
	w := runBinary(t, "", "wait", "nightly-1", "--redis", srv.URL(), "-o", "ndjson")
	results, sum := ndjsonReport(t, w.stdout)
	checkExactlyOnce(t, hosts, results, sum, aggregator.StatusUp)
	// Once it ended, the same ID pings nothing again, and says so.
	r = runBinary(t, hosts, args...)
	if r.code != ExitOK || !strings.Contains(r.stderr, "batch nightly-1 had already ended (complete): nothing is pinged again") || queued() != 0 {
		t.Errorf("enqueue of an ended batch: exit %d, %d tasks queued, stderr %q; want 0, none, and a note", r.code, queued(), r.stderr)
	}
}

// Unprivileged ICMP sockets are allowed per network namespace by
// net.ipv4.ping_group_range, which is off ("1 0") in a new namespace: there
// the default mode must fall back to raw sockets, --unprivileged must fail
// with a clear error, and once the sysctl allows it, --unprivileged works.
func TestE2ESocketModes(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	ns := newNetns(t)
	inNS := func(args ...string) cliResult {
		t.Helper()
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return cliResult{code, out.String(), errOut.String()}
	}
	// The fallback is worth a note, not a warning on every run as root.
	r := inNS("run", "127.0.0.1", "-o", "ndjson")
	if r.code != ExitOK || strings.Contains(r.stderr, "falling back") {
		t.Errorf("default mode, ping sockets off: exit %d; want 0 without a warning\nstderr: %s", r.code, r.stderr)
	}
	r = inNS("run", "127.0.0.1", "-o", "ndjson", "--log-level", "info")
	if r.code != ExitOK || !strings.Contains(r.stderr, "falling back to raw sockets") {
		t.Errorf("default mode, ping sockets off, --log-level info: exit %d; want 0 with a note of the fallback\nstderr: %s", r.code, r.stderr)
	}
	r = inNS("run", "127.0.0.1", "-o", "ndjson", "--unprivileged")
	if r.code != ExitUnresolved || !strings.Contains(r.stdout, "permission denied") {
		t.Errorf("--unprivileged, ping sockets off: exit %d; want 2 and permission denied\nstdout: %s", r.code, r.stdout)
	}
	r = inNS("run", "127.0.0.1", "-o", "ndjson", "--privileged")
	if r.code != ExitOK {
		t.Errorf("--privileged: exit %d\n%s", r.code, r.stderr)
	}
	if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-w", "net.ipv4.ping_group_range=0 2147483647").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v\n%s", err, out)
	}
	r = inNS("run", "127.0.0.1", "-o", "ndjson", "--unprivileged")
	if r.code != ExitOK || strings.Contains(r.stderr, "falling back") {
		t.Errorf("--unprivileged, ping sockets on: exit %d\nstderr: %s", r.code, r.stderr)
	}
}

// newNetns creates a network namespace with its loopback up, removed when
// the test ends; it skips the test where namespaces cannot be made.
func newNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) not found")
	}
	name := fmt.Sprintf("pftest-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace here: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	return name
}

// A worker bounds its memory by its --concurrency and collects garbage
// near that bound, unless GOMEMLIMIT or GOGC say otherwise.
func TestE2EWorkerMemoryLimit(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"from --concurrency", nil, "bytes=180617216 set_by=--concurrency gc_percent=-1"},
		{"GOGC", []string{"GOGC=200"}, "bytes=180617216 set_by=--concurrency gc_percent=200"},
		{"GOMEMLIMIT", []string{"GOMEMLIMIT=1GiB"}, "bytes=1073741824 set_by=GOMEMLIMIT gc_percent=100"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := startProcEnv(t, tc.env, "worker", "--redis", srv.URL(), "--log-level", "info", "--concurrency", "10000")
			testkit.Eventually(t, 30*time.Second, func() bool { return strings.Contains(w.stderr.String(), "worker started") })
			if log := w.stderr.String(); !strings.Contains(log, "memory limit") || !strings.Contains(log, tc.want) {
				t.Errorf("log lacks %q:\n%s", tc.want, log)
			}
		})
	}
}

// Without --concurrency a worker keeps as many pings in flight as its
// memory holds: the most by default on this machine, fewer under a small
// GOMEMLIMIT or a container's memory limit, and then it warns (a warning
// shows at the default log level).
func TestE2EWorkerSizesItself(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const mib = 1 << 20
	sized := func(mem int) string { return fmt.Sprintf("concurrency=%d", (mem-worker.BaseMemory)/worker.PingMemory) }
	for _, tc := range []struct {
		name  string
		env   []string
		limit string // a memory cgroup's
		want  []string
	}{
		{"this machine", nil, "", []string{"level=INFO", fmt.Sprintf("concurrency=%d", worker.MaxAutoConcurrency), "the most by default"}},
		{"GOMEMLIMIT", []string{"GOMEMLIMIT=100MiB"}, "", []string{"level=WARN", sized(100 * mib), "100 MiB of memory (GOMEMLIMIT)", "raise the memory limit"}},
		{"cgroup", nil, "150M", []string{"level=WARN", sized(150 * mib), "150 MiB of memory (cgroup)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"worker", "--redis", srv.URL(), "--log-level", "info"}
			var w *proc
			if tc.limit != "" {
				w = startInMemoryCgroup(t, tc.limit, args...)
			} else {
				w = startProcEnv(t, tc.env, args...)
			}
			testkit.Eventually(t, 30*time.Second, func() bool { return strings.Contains(w.stderr.String(), "worker started") })
			log := w.stderr.String()
			var line string
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, "in-flight limit sized") {
					line = l
				}
			}
			for _, want := range tc.want {
				if !strings.Contains(line, want) {
					t.Errorf("sizing line lacks %q:\n%s", want, log)
				}
			}
			if want := strings.TrimPrefix(tc.want[1], "concurrency="); !strings.Contains(log, "worker started") || !strings.Contains(log, "concurrency="+want+" ") {
				t.Errorf("worker not started with its sized limit %s:\n%s", want, log)
			}
		})
	}
}

// startInMemoryCgroup starts the binary with args in a new memory cgroup
// (v1 or v2) limited to limit, under the one this test runs in; it skips
// the test where that cannot be done (not root, no memory controller).
func startInMemoryCgroup(t *testing.T, limit string, args ...string) *proc {
	t.Helper()
	own, _ := os.ReadFile("/proc/self/cgroup")
	var dir, limitFile string
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case strings.Contains(","+f[1]+",", ",memory,"):
			dir, limitFile = filepath.Join("/sys/fs/cgroup/memory", f[2]), "memory.limit_in_bytes"
		case f[0] == "0" && f[1] == "" && dir == "":
			for _, root := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
				if b, err := os.ReadFile(filepath.Join(root, f[2], "cgroup.controllers")); err == nil && strings.Contains(string(b), "memory") {
					dir, limitFile = filepath.Join(root, f[2]), "memory.max"
				}
			}
		}
	}
	if dir == "" {
		t.Skip("no memory cgroup to make a child of")
	}
	cg := filepath.Join(dir, fmt.Sprintf("pingfleet-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("cannot make a memory cgroup (needs root): %v", err)
	}
	t.Cleanup(func() {
		// After the process stopped (cleanups run last-registered first).
		deadline := time.Now().Add(10 * time.Second)
		for os.Remove(cg) != nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	})
	if err := os.WriteFile(filepath.Join(cg, limitFile), []byte(limit), 0o644); err != nil {
		t.Skipf("cannot limit memory in %s: %v", cg, err)
	}
	script := `echo $$ > "$0/cgroup.procs" && exec "$@"`
	return startExec(t, "/bin/sh", nil, append([]string{"-c", script, cg, binary(t)}, args...)...)
}

// enqueue --wait keeps its batch's tasks a window ahead of the results;
// stopped with SIGINT, it queues the rest first, and the batch goes on.
func TestE2EEnqueueWaitPaces(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const n = waitWindow + 10000
	file := filepath.Join(t.TempDir(), "hosts.txt")
	if err := os.WriteFile(file, []byte(loopbackHosts(n, 120)), 0o644); err != nil {
		t.Fatal(err)
	}
	queued := func() int {
		queues, err := tasks.PingQueues(context.Background(), srv.Client(), tasks.DefaultShards)
		if err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, q := range queues {
			total += int(srv.Client().LLen(context.Background(), tasks.AsynqKeys(q)+":pending").Val())
		}
		return total
	}
	// No worker: nothing completes, so the window stays at its least.
	// Tasks go in chunks of a thousand or so, each only if it fits.
	p := startProc(t, "enqueue", "--redis", srv.URL(), "-f", file, "--wait", "-o", "json")
	testkit.Eventually(t, 30*time.Second, func() bool { return queued() >= waitWindow-2048 })
	time.Sleep(300 * time.Millisecond)
	if got := queued(); got < waitWindow-2048 || got > waitWindow {
		t.Fatalf("%d tasks queued while waiting; want the window, %d, less a chunk at most", got, waitWindow)
	}
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	p.ended(t, 30*time.Second, "enqueue --wait still running 30 s after SIGINT")
	if got := queued(); got != n {
		t.Errorf("%d tasks queued after SIGINT; want all %d", got, n)
	}
	if log := p.stderr.String(); !strings.Contains(log, "queueing the rest") || !strings.Contains(log, "goes on") {
		t.Errorf("stderr does not say the batch goes on:\n%s", log)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != ExitInterrupted {
		t.Errorf("exit %d; want %d", code, ExitInterrupted)
	}
}

// Workers and an enqueuer started with different --shards agree on the
// fleet's queues by themselves: the first to come records its number in
// Redis, the others take it, and no host is stranded on a queue nobody
// serves.
func TestE2EShardsAgree(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	w := startWorker(t, srv.URL(), "--shards", "8")
	testkit.Eventually(t, 30*time.Second, func() bool { return strings.Contains(w.stderr.String(), "worker started") }, "worker started")
	r := runBinary(t, "", "enqueue", "--redis", srv.URL(), "--shards", "16", "127.0.7.1-40", "-c", "1", "--wait", "-o", "ndjson")
	if r.code != ExitOK {
		t.Fatalf("enqueue --shards 16 against workers on 8: exit %d\nstderr: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "--shards 16 ignored: the fleet on this Redis uses 8 queues") {
		t.Errorf("stderr does not say the fleet's shards were taken:\n%s", r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var sum struct{ Summary aggregator.Summary }
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil || sum.Summary.Up != 40 || !sum.Summary.Completed() {
		t.Errorf("summary %+v (%v); want all 40 hosts up", sum.Summary, err)
	}
	// The number stays recorded for the processes to come.
	if n, err := srv.Client().Get(context.Background(), tasks.ShardsKey).Int(); err != nil || n != 8 {
		t.Errorf("%s = %d (%v); want 8", tasks.ShardsKey, n, err)
	}
}

// wait, interrupted, exits 130 and says the batch goes on; without a
// terminal, it prints a progress line every --progress-interval.
func TestE2EWaitInterruptedAndProgress(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	// No worker: the batch stays where it is.
	if r := runBinary(t, "", "enqueue", "--redis", srv.URL(), "127.0.11.1-20", "--batch-id", "followed"); r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	p := startProc(t, "wait", "--redis", srv.URL(), "followed", "--progress-interval", "100ms")
	testkit.Eventually(t, 30*time.Second, func() bool {
		return strings.Count(p.stderr.String(), "pingfleet: batch followed: 0 of 20 done (0 up, 0 down, 0 error)") >= 2
	}, "two progress lines")
	_ = p.cmd.Process.Signal(os.Interrupt)
	p.ended(t, 30*time.Second, "wait still running 30 s after SIGINT")
	if code := p.cmd.ProcessState.ExitCode(); code != ExitInterrupted || !strings.Contains(p.stderr.String(), "batch followed goes on (the fleet's workers go on with it): follow it with 'pingfleet wait followed'") {
		t.Errorf("wait after SIGINT: exit %d, stderr:\n%s", code, p.stderr.String())
	}
}

// wait rides out a Redis restart: it says Redis does not answer, then that
// it answers again, and reports the batch once the workers finish it.
func TestE2EWaitAcrossRedisRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	if r := runBinary(t, "", "enqueue", "--redis", srv.URL(), "127.0.13.1-30", "-c", "1", "--batch-id", "restarted"); r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	p := startProc(t, "wait", "--redis", srv.URL(), "restarted", "-o", "ndjson", "--progress-interval", "100ms")
	testkit.Eventually(t, 10*time.Second, func() bool { return strings.Contains(p.stderr.String(), "pingfleet: batch restarted: 0 of 30") }, "wait following the batch")
	srv.Restart(2 * time.Second)
	startWorker(t, srv.URL())
	p.ended(t, time.Minute, "wait did not end within a minute of the restart")
	if code := p.cmd.ProcessState.ExitCode(); code != ExitOK {
		t.Errorf("wait across a restart: exit %d\n%s", code, p.stderr.String())
	}
	if log := p.stderr.String(); !strings.Contains(log, "Redis does not answer") || !strings.Contains(log, "Redis answers again") {
		t.Errorf("stderr does not tell the outage:\n%s", log)
	}
	// A wait started while Redis is down waits for it too (longer than
	// the client's own dial retries, about 2 s).
	restarted := make(chan struct{})
	go func() { defer close(restarted); srv.Restart(6 * time.Second) }()
	testkit.Eventually(t, 5*time.Second, func() bool { return srv.Client().Ping(context.Background()).Err() != nil }, "Redis down")
	r := runBinary(t, "", "wait", "--redis", srv.URL(), "restarted", "-o", "ndjson")
	<-restarted
	if r.code != ExitOK || !strings.Contains(r.stderr, "Redis does not answer") {
		t.Errorf("wait started during an outage: exit %d\n%s", r.code, r.stderr)
	}
}

// Redis killed (SIGKILL) mid-batch and started again on its append-only
// file: the workers ride it out, the tasks the outage stranded (their
// results not recorded, their leases gone stale) are pinged again, each
// host is counted once, and the batch completes within 45 s of Redis
// answering again (the bound), with a 10 s outage.
func TestE2ERedisKilledMidBatch(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	startWorker(t, srv.URL(), "--concurrency", "50")
	startWorker(t, srv.URL(), "--concurrency", "50")
	hosts := loopbackHosts(600, 140)
	if r := runBinary(t, hosts, "enqueue", "--redis", srv.URL(), "-", "-c", "2", "-p", "500ms", "--batch-id", "outage"); r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	rdb := srv.Client()
	testkit.Eventually(t, time.Minute, func() bool {
		done, _ := rdb.HGet(context.Background(), aggregator.Keys("outage")[0], "done").Int()
		return done >= 100
	}, "a sixth of the batch done")
	srv.Restart(10 * time.Second)
	waitRecovered(t, srv, hosts, "outage", time.Now(), "Redis answered again")
}

// Interrupting run -l is how a loop ends, as with fping -l: the totals go
// to stderr and the exit code says whether every host answered. -Q prints
// each host's figures since the last report in between.
func TestE2ELoopInterrupted(t *testing.T) {
	t.Parallel()
	p := startProc(t, "run", "127.0.0.1", "-l", "-p", "50ms", "-Q", "200ms")
	testkit.Eventually(t, 30*time.Second, func() bool {
		return strings.Count(p.stderr.String(), "127.0.0.1 : xmt/rcv/%loss = ") >= 2
	}, "two -Q reports")
	_ = p.cmd.Process.Signal(os.Interrupt)
	p.ended(t, 30*time.Second, "run -l still running 30 s after SIGINT")
	out := p.stderr.String()
	final := out[strings.LastIndex(out, "\n\n")+2:]
	var sent, recv int
	if _, err := fmt.Sscanf(final, "127.0.0.1 : xmt/rcv/%%loss = %d/%d/", &sent, &recv); err != nil || sent < 2 || recv != sent {
		t.Errorf("totals %q (%v): want every request answered, more than one", final, err)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != ExitOK {
		t.Errorf("run -l after SIGINT: exit %d; want 0 (every host answered)\n%s", code, out)
	}
}

// --stream prints each host's result as it is counted, while the batch
// runs, each once; and, on a finished batch, each once from its results.
func TestE2EStream(t *testing.T) {
	t.Parallel()
	// One host at a time, a second each: the first row is out long
	// before the batch ends.
	p := startProc(t, "run", "127.0.12.1-3", "-c", "2", "-p", "1s", "--concurrency", "1", "--stream", "-o", "ndjson")
	testkit.Eventually(t, 30*time.Second, func() bool { return strings.Count(p.stdout.String(), "\n") >= 1 }, "a first row")
	select {
	case <-p.done:
		t.Fatalf("run had ended by its first streamed row; stdout:\n%s", p.stdout)
	default:
	}
	<-p.done
	if code := p.cmd.ProcessState.ExitCode(); code != ExitOK {
		t.Fatalf("run --stream: exit %d\n%s", code, p.stderr)
	}
	checkStreamed(t, p.stdout.String(), "127.0.12.1", "127.0.12.2", "127.0.12.3")

	srv := redistest.Start(t)
	if r := runBinary(t, "", "run", "--redis", srv.URL(), "127.0.12.10-29", "-c", "1", "--batch-id", "streamed", "-q"); r.code != ExitOK {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	r := runBinary(t, "", "wait", "--redis", srv.URL(), "streamed", "--stream", "-o", "ndjson")
	if r.code != ExitOK {
		t.Fatalf("wait --stream of a finished batch: exit %d\n%s", r.code, r.stderr)
	}
	var hosts []string
	for i := 10; i <= 29; i++ {
		hosts = append(hosts, fmt.Sprintf("127.0.12.%d", i))
	}
	checkStreamed(t, r.stdout, hosts...)
}

// checkStreamed checks ndjson output: a row for each of hosts, in any
// order, then the summary.
func checkStreamed(t *testing.T, out string, hosts ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	seen := map[string]int{}
	for _, l := range lines[:len(lines)-1] {
		var r aggregator.Result
		if err := json.Unmarshal([]byte(l), &r); err != nil || r.Status != aggregator.StatusUp {
			t.Errorf("row %q: %v; want an up host", l, err)
		}
		seen[r.Host]++
	}
	for _, h := range hosts {
		if seen[h] != 1 {
			t.Errorf("%s streamed %d times; want once\n%s", h, seen[h], out)
		}
	}
	var sum struct{ Summary aggregator.Summary }
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil || sum.Summary.Up != len(hosts) || len(seen) != len(hosts) {
		t.Errorf("last line %q (%v); want the summary of %d hosts up", lines[len(lines)-1], err, len(hosts))
	}
}
