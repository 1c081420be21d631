package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/tasks"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// toxiproxy v2.5.0 can leave a toxic's pipe blocked on its
		// channel when the toxic is removed while the link closes
		// (TestE2ERedisFaultsThroughProxy, once in a run): the library's,
		// not ours.
		if err := goleak.Find(goleak.IgnoreTopFunction(deathsig.Spawner),
			goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe")); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	cleanupBinary()
	os.Exit(code)
}

// cli runs the pingfleet command line in-process.
type cliResult struct {
	code           int
	stdout, stderr string
}

func cli(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := Main(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return cliResult{code, out.String(), errOut.String()}
}

// report is the json output of run and wait.
type runReport struct {
	Results []aggregator.Result `json:"results"`
	Summary aggregator.Summary  `json:"summary"`
}

func decodeReport(t *testing.T, r cliResult) runReport {
	t.Helper()
	var rep runReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("decode report: %v\nstdout: %s\nstderr: %s", err, r.stdout, r.stderr)
	}
	return rep
}

func TestRunEmbedded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "hosts.txt")
	if err := os.WriteFile(file, []byte("# lab hosts\n127.0.3.1\n\n127.0.3.2 127.0.3.1  # duplicate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "127.0.4.9\n", "run", "127.0.2.0/30", "localhost", "-f", file, "-", "--count", "2", "-p", "20ms", "-o", "json")
	if r.code != ExitOK {
		t.Fatalf("exit %d; want 0\nstderr: %s", r.code, r.stderr)
	}
	rep := decodeReport(t, r)
	var got []string
	for _, res := range rep.Results {
		got = append(got, res.Host+" "+string(res.Status))
		if res.Sent != 2 || res.Received != 2 || res.RTTAvg <= 0 || res.RTTMax < res.RTTMin || res.ReplyTTL == 0 {
			t.Errorf("result %+v: want 2 sent, 2 received, RTTs and a reply TTL", res)
		}
	}
	want := []string{"127.0.2.1 up", "127.0.2.2 up", "localhost up", "127.0.4.9 up", "127.0.3.1 up", "127.0.3.2 up"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hosts, in input order (-want +got):\n%s", diff)
	}
	s := rep.Summary
	if s.State != aggregator.StateComplete || s.Total != 6 || s.Up != 6 || s.Sent != 12 || s.Received != 12 || s.RTTMax <= 0 {
		t.Errorf("summary = %+v", s)
	}
}

func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc      string
		args      []string
		code      int
		stderrHas []string
		stdoutHas string
	}{
		{
			desc:      "unresolvable host",
			args:      []string{"run", "127.0.0.1", "gone.invalid", "-o", "table"},
			code:      ExitUnresolved,
			stdoutHas: "gone.invalid",
		},
		{
			desc:      "invalid entries are all named, nothing runs",
			args:      []string{"run", "127.0.0.1", "bad_host!", "10.0.0.1-300"},
			code:      ExitUsage,
			stderrHas: []string{`argument 2: "bad_host!"`, `argument 3: "10.0.0.1-300"`, "nothing submitted"},
		},
		{
			desc:      "skip-invalid pings the rest",
			args:      []string{"run", "127.0.0.1", "bad_host!", "--skip-invalid", "-o", "ndjson"},
			code:      ExitOK,
			stderrHas: []string{`argument 2: "bad_host!"`},
			stdoutHas: `"host":"127.0.0.1"`,
		},
		{
			desc:      "a denied target is an error result, not pinged",
			args:      []string{"run", "127.0.0.1", "224.0.0.251", "-c", "1", "-o", "ndjson"},
			code:      ExitUnresolved,
			stdoutHas: `"error":"denied by target policy: 224.0.0.251 is in denied range 224.0.0.0/4"`,
		},
		{
			desc:      "--allow keeps the worker inside it",
			args:      []string{"run", "127.0.0.1", "localhost", "--allow", "10.0.0.0/8", "-c", "1", "-o", "ndjson"},
			code:      ExitUnresolved,
			stdoutHas: `"error":"denied by target policy: 127.0.0.1 is outside the allowed ranges"`,
		},
		{
			desc:      "bad --deny",
			args:      []string{"run", "127.0.0.1", "--deny", "10.0.0.0/33"},
			code:      ExitUsage,
			stderrHas: []string{`--deny "10.0.0.0/33"`},
		},
		{
			desc:      "CIDR over the cap",
			args:      []string{"run", "10.0.0.0/8"},
			code:      ExitUsage,
			stderrHas: []string{"more than the limit of 65536"},
		},
		{
			desc:      "bad option names its flag",
			args:      []string{"run", "127.0.0.1", "--count", "0"},
			code:      ExitUsage,
			stderrHas: []string{`--count "0"`},
		},
		{
			desc:      "unknown flag",
			args:      []string{"run", "--nope"},
			code:      ExitUsage,
			stderrHas: []string{"unknown flag: --nope"},
		},
		{
			desc:      "no hosts",
			args:      []string{"run"},
			code:      ExitUsage,
			stderrHas: []string{"no hosts given"},
		},
		{
			desc:      "enqueue needs a Redis",
			args:      []string{"enqueue", "127.0.0.1"},
			code:      ExitUsage,
			stderrHas: []string{"no Redis given"},
		},
		{
			desc:      "unreachable Redis is a system error",
			args:      []string{"status", "x", "--redis", "redis://127.0.0.1:1/0"},
			code:      ExitSystem,
			stderrHas: []string{"connect to redis redis://127.0.0.1:1/0"},
		},
		{
			desc:      "bad Redis URL",
			args:      []string{"status", "x", "--redis", "http://x"},
			code:      ExitUsage,
			stderrHas: []string{"--redis"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			r := cli(t, "", tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d; want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			for _, s := range tc.stderrHas {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
				}
			}
			if !strings.Contains(r.stdout, tc.stdoutHas) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdoutHas, r.stdout)
			}
		})
	}
}

// With --redis, the read commands see the batch a run left behind.
func TestReadCommands(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	redisURL := "--redis=" + srv.URL()
	r := cli(t, "", "run", redisURL, "127.0.5.1-3", "nope.invalid", "--batch-id", "read-cmds", "-q", "-o", "ndjson")
	if r.code != ExitUnresolved {
		t.Fatalf("run: exit %d; want 2\nstderr: %s", r.code, r.stderr)
	}

	st := cli(t, "", "status", "read-cmds", redisURL, "-o", "json")
	var s aggregator.Summary
	if err := json.Unmarshal([]byte(st.stdout), &s); err != nil {
		t.Fatalf("status json: %v\n%s", err, st.stdout)
	}
	if st.code != ExitUnresolved || s.Up != 3 || s.Error != 1 || s.State != aggregator.StateComplete {
		t.Errorf("status: exit %d, summary %+v", st.code, s)
	}

	// Its exit code is the batch's (an error host: 2), whatever is shown.
	res := cli(t, "", "results", "read-cmds", redisURL, "--status", "up", "-o", "csv")
	rows, err := csv.NewReader(strings.NewReader(res.stdout)).ReadAll()
	if err != nil || res.code != ExitUnresolved {
		t.Fatalf("results csv: exit %d, %v\n%s", res.code, err, res.stdout)
	}
	var hosts []string
	for _, row := range rows[1:] {
		hosts = append(hosts, row[0]+" "+row[2])
	}
	if diff := cmp.Diff([]string{"127.0.5.1 up", "127.0.5.2 up", "127.0.5.3 up"}, hosts); diff != "" {
		t.Errorf("results --status up (-want +got):\n%s", diff)
	}

	list := cli(t, "", "batches", redisURL, "-o", "table")
	if list.code != ExitOK || !strings.Contains(list.stdout, "read-cmds") || !strings.Contains(list.stdout, "complete") {
		t.Errorf("batches: exit %d\n%s", list.code, list.stdout)
	}

	missing := cli(t, "", "status", "no-such-batch", redisURL)
	if missing.code != ExitUsage || !strings.Contains(missing.stderr, "batch not found") {
		t.Errorf("status of a missing batch: exit %d, stderr %s", missing.code, missing.stderr)
	}
}

// On miniredis, run spreads tasks over one queue unless --shards says
// otherwise; on a private redis-server and with --redis it keeps the
// fleet's default. So for its asynq servers: 16 on miniredis, 64 otherwise.
func TestRunEmbeddedShards(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"miniredis", []string{"--embedded", "miniredis"}, "shards=1 servers=16"},
		{"miniredis, --shards", []string{"--embedded", "miniredis", "--shards", "4", "--servers", "32"}, "shards=4 servers=32"},
		{"redis-server", []string{"--embedded", "redis-server"}, "shards=8 servers=64"},
		{"--redis", []string{"--redis", srv.URL()}, "shards=8 servers=64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cli(t, "", append([]string{"run", "127.0.2.9", "-p", "20ms", "-o", "json", "--log-level", "info"}, tc.args...)...)
			if r.code != ExitOK {
				t.Fatalf("exit %d\nstderr: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, "worker started") || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("log lacks %q:\n%s", tc.want, r.stderr)
			}
			if rep := decodeReport(t, r); rep.Summary.Up != 1 {
				t.Errorf("summary = %+v", rep.Summary)
			}
		})
	}
}

// cancel ends an open batch for good: its queued tasks are gone, its hosts
// count as cancelled (not up), and a second cancel changes nothing. An
// unknown batch or one that ended otherwise is refused with exit code 3.
func TestCancelCommand(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	redisURL := "--redis=" + srv.URL()
	if r := cli(t, "", "enqueue", redisURL, "127.0.6.1-40", "--batch-id", "to-cancel"); r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	store := testkit.NewStore(t, srv.Client(), aggregator.Config{})
	queued := func() int { return store.Queued(t) }
	if n := queued(); n != 40 {
		t.Fatalf("%d tasks queued; want 40", n)
	}
	// A batch still running: its hosts not done yet have not answered
	// (exit 1), and the state says why.
	if r := cli(t, "", "status", redisURL, "to-cancel", "-o", "json"); r.code != ExitDown || !strings.Contains(r.stdout, `"state": "running"`) {
		t.Errorf("status of a running batch: exit %d, stdout %s; want 1 and state running", r.code, r.stdout)
	}
	for range 2 { // the second time, nothing changes and it is no error
		r := cli(t, "", "cancel", redisURL, "to-cancel", "-o", "json")
		var s aggregator.Summary
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || r.code != ExitOK {
			t.Fatalf("cancel: exit %d, %v\nstdout: %s\nstderr: %s", r.code, err, r.stdout, r.stderr)
		}
		if s.State != aggregator.StateCancelled || s.Cancelled != 40 || s.Up != 0 || s.Done != 40 {
			t.Errorf("cancelled batch: %+v; want 40 hosts cancelled, none up", s)
		}
		if n := queued(); n != 0 {
			t.Errorf("%d tasks still queued after cancel", n)
		}
	}
	// Nothing pinged is no success: status, results and wait of the
	// cancelled batch exit 2.
	for _, c := range [][]string{{"status", "to-cancel"}, {"results", "to-cancel"}, {"wait", "to-cancel", "-q"}} {
		if r := cli(t, "", append(c, redisURL)...); r.code != ExitUnresolved {
			t.Errorf("%s of a cancelled batch: exit %d; want 2\n%s", c[0], r.code, r.stderr)
		}
	}
	if r := cli(t, "", "run", redisURL, "127.0.6.50", "--batch-id", "done-already", "-q"); r.code != ExitOK {
		t.Fatalf("run: exit %d\n%s", r.code, r.stderr)
	}
	r := cli(t, "", "cancel", redisURL, "no-such-batch", "done-already")
	if r.code != ExitUsage || !strings.Contains(r.stderr, "batch not found") || !strings.Contains(r.stderr, "batch done-already is already complete") {
		t.Errorf("cancel of an unknown and a complete batch: exit %d, stderr %q; want 3 and both named", r.code, r.stderr)
	}
}

// enqueue takes what the API takes: a deadline and a callback URL, checked
// before anything is submitted.
func TestEnqueueDeadlineAndCallback(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	redisURL := "--redis=" + srv.URL()
	before := time.Now()
	r := cli(t, "", "enqueue", redisURL, "127.0.8.1-3", "--batch-id", "with-deadline", "--deadline", "90s", "--callback-url", "http://127.0.0.1:9/hook", "--callback-allow", "127.0.0.0/8", "--priority", "high", "--max-in-flight", "2")
	if r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	st := cli(t, "", "status", redisURL, "with-deadline", "-o", "json")
	var s aggregator.Summary
	if err := json.Unmarshal([]byte(st.stdout), &s); err != nil {
		t.Fatalf("status: %v\n%s", err, st.stdout)
	}
	if s.CallbackURL != "http://127.0.0.1:9/hook" || s.Deadline.Before(before.Add(89*time.Second)) || s.Deadline.After(time.Now().Add(91*time.Second)) || s.Priority != tasks.PriorityHigh || s.MaxInFlight != 2 {
		t.Errorf("batch deadline %s, callback %q, priority %q, in-flight cap %d; want 90 s after submission, the URL given, high and 2", s.Deadline, s.CallbackURL, s.Priority, s.MaxInFlight)
	}
	for _, tc := range []struct{ flag, want string }{
		{"--callback-url=ftp://x", `--callback-url "ftp://x": must be an http:// or https:// URL`},
		{"--callback-url=http://", `--callback-url "http://": has no host`},
		{"--callback-url=http://127.0.0.1:6379/", `--callback-url "http://127.0.0.1:6379/": callback target refused: 127.0.0.1 is loopback (an operator can open it with --callback-allow 127.0.0.0/8)`},
		{"--callback-url=http://169.254.169.254/latest/", `169.254.169.254 is link-local`},
		{"--deadline=-5s", "--deadline -5s: must be positive"},
		{"--priority=asap", `--priority "asap": want low, normal, high or urgent`},
		{"--max-in-flight=-1", `--max-in-flight -1: must not be negative`},
	} {
		r := cli(t, "", "enqueue", redisURL, "127.0.8.9", "--batch-id", "refused", tc.flag)
		if r.code != ExitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("enqueue %s: exit %d, stderr %q; want 3 and %q", tc.flag, r.code, r.stderr, tc.want)
		}
	}
	if n := srv.Client().Exists(context.Background(), aggregator.Keys("refused")...).Val(); n != 0 {
		t.Errorf("a refused enqueue left %d keys", n)
	}
}

// Usage mistakes exit 3, as fping's: an unknown command, a list of no
// batches; --version and version say what the binary is.
func TestUsageAndVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout or stderr
	}{
		{[]string{"nosuch"}, ExitUsage, `unknown command "nosuch"`},
		{[]string{"batches", "-n", "0", "--redis", "redis://127.0.0.1:1"}, ExitUsage, "--limit 0: must be at least 1"},
		{[]string{"batches", "--label", "nolabel", "--redis", "redis://127.0.0.1:1"}, ExitUsage, `--label "nolabel": use KEY=VALUE`},
		{[]string{"--version"}, ExitOK, "pingfleet "},
		{[]string{"version"}, ExitOK, runtime.Version()},
		{[]string{"status", "x", "--shards", "4"}, ExitUsage, "unknown flag: --shards"},
		{[]string{"run", "--janitor", "127.0.0.1"}, ExitUsage, "unknown flag: --janitor"},
		{[]string{"run", "--stream", "-l", "127.0.0.1"}, ExitUsage, "--stream: --loop prints"},
	} {
		r := cli(t, "", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.out) {
			t.Errorf("pingfleet %s: exit %d, output %q; want %d and %q", strings.Join(tc.args, " "), r.code, r.stdout+r.stderr, tc.code, tc.out)
		}
	}
}

// A version and commit given at link time (make build, the Dockerfile) are
// what the binary says it is, wherever the build info has none.
func TestVersionFromLinker(t *testing.T) {
	defer func(v, c string) { buildVersion, buildCommit = v, c }(buildVersion, buildCommit)
	buildVersion, buildCommit = "v9.8.7", "0123456789ab"
	if got := version(); !strings.HasPrefix(got, "pingfleet v9.8.7, commit 0123456789ab, go") {
		t.Errorf("version() = %q", got)
	}
}

// batches --label lists only the batches that carry every label given.
func TestBatchesByLabel(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	redisURL := "--redis=" + srv.URL()
	for _, b := range []struct{ id, label string }{{"l-nightly", "job=nightly"}, {"l-deploy", "job=deploy"}} {
		if r := cli(t, "", "enqueue", redisURL, "127.0.9.1", "--batch-id", b.id, "--label", b.label, "--label", "team=net"); r.code != ExitOK {
			t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
		}
	}
	r := cli(t, "", "batches", redisURL, "--label", "job=nightly", "--label", "team=net", "-o", "json")
	var list []aggregator.Summary
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || r.code != ExitOK {
		t.Fatalf("batches: exit %d, %v\n%s", r.code, err, r.stdout)
	}
	if len(list) != 1 || list[0].ID != "l-nightly" {
		t.Errorf("batches --label job=nightly: %+v; want l-nightly alone", list)
	}
}

// -p and -t read a bare number as milliseconds, as fping's do.
func TestDurationsInMilliseconds(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	redisURL := "--redis=" + srv.URL()
	if r := cli(t, "", "enqueue", redisURL, "127.0.9.9", "--batch-id", "ms", "-c", "2", "-p", "20", "-t", "1.5s"); r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	st := cli(t, "", "status", redisURL, "ms", "-o", "json")
	var s aggregator.Summary
	if err := json.Unmarshal([]byte(st.stdout), &s); err != nil {
		t.Fatal(err)
	}
	if s.Options.Interval.D() != 20*time.Millisecond || s.Options.Timeout.D() != 1500*time.Millisecond {
		t.Errorf("-p 20 -t 1.5s gave interval %s, timeout %s", s.Options.Interval.D(), s.Options.Timeout.D())
	}
	if r := cli(t, "", "enqueue", redisURL, "127.0.9.9", "-p", "5x"); r.code != ExitUsage || !strings.Contains(r.stderr, "use milliseconds (500) or a duration (1.5s)") {
		t.Errorf("-p 5x: exit %d, stderr %q", r.code, r.stderr)
	}
}

// -a and -u print only the hosts that answered, or only the others, as
// fping's do; the summary and the exit code still cover every host.
func TestAliveUnreachable(t *testing.T) {
	t.Parallel()
	hosts := func(r cliResult) []string {
		t.Helper()
		var out []string
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var v struct {
				Host    string              `json:"host"`
				Summary *aggregator.Summary `json:"summary"`
			}
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				t.Fatalf("%v: %q", err, line)
			}
			if v.Summary == nil {
				out = append(out, v.Host)
			} else if v.Summary.Total != 3 {
				t.Errorf("summary covers %d hosts; want 3", v.Summary.Total)
			}
		}
		return out
	}
	for _, tc := range []struct {
		flag string
		want []string
	}{
		{"-a", []string{"127.0.10.1", "127.0.10.2"}},
		{"-u", []string{"nope.invalid"}},
	} {
		r := cli(t, "", "run", "127.0.10.1-2", "nope.invalid", "-c", "1", tc.flag, "-o", "ndjson")
		if r.code != ExitUnresolved {
			t.Errorf("run %s: exit %d; want 2\n%s", tc.flag, r.code, r.stderr)
		}
		if diff := cmp.Diff(tc.want, hosts(r)); diff != "" {
			t.Errorf("run %s (-want +got):\n%s", tc.flag, diff)
		}
	}
	if r := cli(t, "", "run", "127.0.10.1", "-a", "-u"); r.code != ExitUsage {
		t.Errorf("run -a -u: exit %d; want 3", r.code)
	}
}

// The man pages come from the commands; the shell completes batch IDs from
// Redis and the values of enum flags.
func TestManAndCompletion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if r := cli(t, "", "man", dir); r.code != ExitOK {
		t.Fatalf("man: exit %d\n%s", r.code, r.stderr)
	}
	page, err := os.ReadFile(filepath.Join(dir, "pingfleet-run.1"))
	if err != nil || !strings.Contains(string(page), "unreachable") || !strings.Contains(string(page), ".TH \"PINGFLEET\"") {
		t.Errorf("pingfleet-run.1 (%v):\n%.300s", err, page)
	}

	srv := redistest.Start(t)
	if r := cli(t, "", "enqueue", "--redis", srv.URL(), "127.0.12.1", "--batch-id", "to-complete"); r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	if r := cli(t, "", "__complete", "status", "--redis", srv.URL(), ""); !strings.Contains(r.stdout, "to-complete\t") {
		t.Errorf("completion of a batch ID:\n%s", r.stdout)
	}
	for _, tc := range [][]string{
		{"run", "--output", "ndjson"},
		{"enqueue", "--priority", "urgent"},
		{"worker", "--log-level", "debug"},
		{"status", "--log-format", "json"},
	} {
		if r := cli(t, "", "__complete", tc[0], tc[1], ""); !strings.Contains(r.stdout, tc[2]+"\n") {
			t.Errorf("completion of %s %s: want %s among\n%s", tc[0], tc[1], tc[2], r.stdout)
		}
	}
}

// results --sort puts the hosts that need a look first.
func TestResultsSort(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	agg, err := aggregator.New(aggregator.Config{Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	hosts := []string{"a.up", "b.down", "c.slow", "d.err", "e.lossy"}
	if _, err := agg.Create(ctx, aggregator.Batch{ID: "sorted", Hosts: hosts, Options: tasks.PingOptions{Count: 4}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []aggregator.Result{
		{Host: "a.up", Status: aggregator.StatusUp, Sent: 4, Received: 4, RTTAvg: 1},
		{Host: "b.down", Status: aggregator.StatusDown, Sent: 4, LossPct: 100},
		{Host: "c.slow", Status: aggregator.StatusUp, Sent: 4, Received: 4, RTTAvg: 90},
		{Host: "d.err", Status: aggregator.StatusError, Error: "no such host"},
		{Host: "e.lossy", Status: aggregator.StatusUp, Sent: 4, Received: 2, LossPct: 50, RTTAvg: 5},
	} {
		if _, err := agg.Record(ctx, "sorted", r); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		sort string
		want []string
	}{
		{"status", []string{"b.down", "d.err", "a.up", "c.slow", "e.lossy"}},
		{"loss", []string{"b.down", "e.lossy", "a.up", "c.slow", "d.err"}},
		{"rtt", []string{"c.slow", "e.lossy", "a.up", "b.down", "d.err"}},
	} {
		r := cli(t, "", "results", "sorted", "--redis", srv.URL(), "--sort", tc.sort, "-o", "ndjson")
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var res aggregator.Result
			if err := json.Unmarshal([]byte(line), &res); err != nil {
				t.Fatalf("--sort %s: %v: %q", tc.sort, err, line)
			}
			got = append(got, res.Host)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("--sort %s (-want +got):\n%s", tc.sort, diff)
		}
	}
}

// -n looks each address's name up on the worker (fping -n); -D puts the
// time each host's ping ended on its table row (fping -D). Only 127.0.0.1
// is pinged: /etc/hosts names it, so no DNS server is asked.
func TestNamesAndTimestamps(t *testing.T) {
	t.Parallel()
	r := cli(t, "", "run", "127.0.0.1", "-n", "-c", "1", "-o", "json")
	if r.code != ExitOK {
		t.Fatalf("run -n: exit %d\n%s", r.code, r.stderr)
	}
	rep := decodeReport(t, r)
	if len(rep.Results) != 1 || rep.Results[0].Name != "localhost" {
		t.Errorf("run -n 127.0.0.1: results %+v; want the name localhost", rep.Results)
	}
	before := time.Now()
	r = cli(t, "", "run", "127.0.0.1", "-n", "-D", "-c", "1", "-o", "table")
	if r.code != ExitOK {
		t.Fatalf("run -n -D: exit %d\n%s", r.code, r.stderr)
	}
	lines := strings.Split(r.stdout, "\n")
	if !strings.HasPrefix(lines[0], "TIME  ") || len(lines) < 2 {
		t.Fatalf("run -D: no time column:\n%s", r.stdout)
	}
	var sec, ms int64
	var host string
	if _, err := fmt.Sscanf(lines[1], "[%d.%d] %s", &sec, &ms, &host); err != nil {
		t.Fatalf("row %q: %v", lines[1], err)
	}
	if at := time.UnixMilli(sec*1000 + ms); at.Before(before.Add(-time.Second)) || at.After(time.Now()) {
		t.Errorf("row %q: time %v; want between %v and now", lines[1], at, before)
	}
	if host != "localhost" {
		t.Errorf("row %q: host %q; want the name localhost", lines[1], host)
	}
	if r := cli(t, "", "run", "127.0.0.1", "-D", "--timestamp-format", "julian"); r.code != ExitUsage || !strings.Contains(r.stderr, `--timestamp-format "julian"`) {
		t.Errorf("bad --timestamp-format: exit %d, %q; want 3 naming it", r.code, r.stderr)
	}
}

// run -l pings in rounds, one request per host each, as fping -l: each
// round is a batch labelled with its number and the first round's ID, its
// rows stream, and the totals per host go to stderr in fping's layout.
func TestRunLoop(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	r := cli(t, "", "run", "--redis", srv.URL(), "127.0.0.1-2", "nope.invalid", "-l", "--rounds", "3", "-p", "50ms", "-o", "ndjson")
	if r.code != ExitUnresolved { // a name that never resolved, as fping's 2
		t.Fatalf("run -l: exit %d; want 2\n%s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 9 {
		t.Fatalf("run -l --rounds 3 of 3 hosts: %d lines; want 9:\n%s", len(lines), r.stdout)
	}
	var began [3]time.Time // each round's first ping, which the next one counts -p from
	for i, line := range lines {
		var res aggregator.Result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			t.Fatal(err)
		}
		if want := []string{"127.0.0.1", "127.0.0.2", "nope.invalid"}[i%3]; res.Host != want {
			t.Errorf("line %d: host %s; want %s", i, res.Host, want)
		}
		if res.Host == "127.0.0.1" && (res.Sent != 1 || res.Status != aggregator.StatusUp) {
			t.Errorf("line %d: %+v; want up after one request", i, res)
		}
		if b := &began[i/3]; b.IsZero() || res.Started.Before(*b) {
			*b = res.Started
		}
	}
	for i := 1; i < len(began); i++ {
		// Times are kept to the millisecond: a gap a little under 50 ms
		// is the rounding.
		if gap := began[i].Sub(began[i-1]); gap < 48*time.Millisecond {
			t.Errorf("round %d began %v after the one before; want -p 50ms or more", i+1, gap)
		}
	}
	for _, want := range []string{
		"127.0.0.1    : xmt/rcv/%loss = 3/3/0%, min/avg/max = ",
		"127.0.0.2    : xmt/rcv/%loss = 3/3/0%, min/avg/max = ",
		"nope.invalid : xmt/rcv/%loss = 0/0/0%\n",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	// The rounds are batches: the first names the loop, the others say so.
	b := cli(t, "", "batches", "--redis", srv.URL(), "--label", "round=1", "-o", "json")
	var first []aggregator.Summary
	if err := json.Unmarshal([]byte(b.stdout), &first); err != nil || len(first) != 1 {
		t.Fatalf("batches --label round=1: %v, %s", err, b.stdout)
	}
	b = cli(t, "", "batches", "--redis", srv.URL(), "--label", "loop="+first[0].ID, "-o", "json")
	var later []aggregator.Summary
	if err := json.Unmarshal([]byte(b.stdout), &later); err != nil || len(later) != 2 {
		t.Errorf("batches --label loop=%s: %v, %s; want rounds 2 and 3", first[0].ID, err, b.stdout)
	}

	for _, bad := range [][]string{
		{"-l", "-c", "2"}, {"-l", "-C", "2"}, {"-l", "-o", "json"}, {"-l", "--batch-id", "x"},
		{"--rounds", "2"}, {"-l", "--label", "round=7"},
	} {
		if r := cli(t, "", append([]string{"run", "127.0.0.1"}, bad...)...); r.code != ExitUsage {
			t.Errorf("run 127.0.0.1 %v: exit %d; want 3\n%s", bad, r.code, r.stderr)
		}
	}
}

// serve accepts by default as many connections as its open-file limit
// leaves, so that a flood of idle clients makes accept wait, not fail.
func TestDefaultMaxConnections(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		files uint64
		want  int
	}{{0, 1000}, {1024, 1000}, {4096, 2996}, {20000, 18900}, {1 << 20, 100000}, {1 << 62, 100000}} {
		if got := defaultMaxConnections(tc.files); got != tc.want {
			t.Errorf("defaultMaxConnections(%d) = %d; want %d", tc.files, got, tc.want)
		}
	}
}

// A batch past its deadline with no worker and no API server left (no
// janitor to expire it): wait expires it itself, says so, prints the
// hosts as expired and exits 2, instead of waiting for ever.
func TestWaitExpiresOverdueBatch(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	redisURL := "--redis=" + srv.URL()
	if r := cli(t, "", "enqueue", redisURL, "127.0.8.1-3", "--batch-id", "no-fleet", "--deadline", "1s"); r.code != ExitOK {
		t.Fatalf("enqueue: exit %d\n%s", r.code, r.stderr)
	}
	start := time.Now()
	r := cli(t, "", "wait", redisURL, "no-fleet", "-o", "json")
	if r.code != ExitUnresolved || !strings.Contains(r.stderr, "batch no-fleet passed its deadline") {
		t.Fatalf("wait: exit %d after %s, stderr %q; want 2 and the batch expired", r.code, time.Since(start), r.stderr)
	}
	var out struct {
		Summary aggregator.Summary
		Results []aggregator.Result
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("wait -o json: %v\n%s", err, r.stdout)
	}
	if s := out.Summary; s.State != aggregator.StateExpired || s.Expired != 3 || s.Up != 0 {
		t.Errorf("summary %+v; want expired, 3 hosts expired", s)
	}
	for _, res := range out.Results {
		if res.Status != aggregator.StatusExpired {
			t.Errorf("result %+v; want expired", res)
		}
	}
}

// Each command's help lists only the flags that mean something to it.
func TestHelpShowsOwnFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cmd      string
		has, not []string
	}{
		{"run", []string{"--count", "--retries", "--embedded", "--concurrency"},
			[]string{"--servers", "--task-check-interval", "--shutdown-timeout", "--shards", "--callback-secret", "--janitor"}},
		{"worker", []string{"--servers", "--shards", "--janitor", "--callback-secret"}, []string{"--count", "--embedded"}},
		{"status", []string{"--redis"}, []string{"--retention", "--shards", "--pprof", "--servers"}},
		{"results", []string{"--sort", "--alive"}, []string{"--retention", "--shards", "--pprof"}},
		{"batches", []string{"--label"}, []string{"--retention", "--shards", "--pprof"}},
		{"version", nil, []string{"--redis", "--log-level", "--cpuprofile", "Global Flags"}},
	} {
		r := cli(t, "", tc.cmd, "--help")
		help := r.stdout + r.stderr
		for _, f := range tc.has {
			if !strings.Contains(help, f+" ") {
				t.Errorf("%s --help does not list %s", tc.cmd, f)
			}
		}
		for _, f := range tc.not {
			if strings.Contains(help, f+" ") {
				t.Errorf("%s --help lists %s", tc.cmd, f)
			}
		}
	}
}
