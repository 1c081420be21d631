//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pingfleet/pingfleet/internal/testkit"
)

// Scenario 13: past one Redis. The same 100,000-host -c 1 batch, one
// default worker and enqueue --wait, on one standalone Redis and on local
// Clusters of 3 and 6 masters, alternated run by run: the wall time, each
// Redis node's CPU, and each component's CPU per host, from which the
// capacity model (printed after the table) projects the fleet for larger
// sweeps.

// redisSet is one standalone Redis, or the masters of a Cluster, started
// for one run.
type redisSet struct {
	procs []*process
	ports []int
	url   string
	dir   string
}

// startRedisSet starts a standalone Redis (masters 0) or a Cluster of
// masters masters, each a service of its own (see startService).
func (b *bench) startRedisSet(masters int) (*redisSet, error) {
	dir, err := os.MkdirTemp(b.dir, "redis-")
	if err != nil {
		return nil, err
	}
	s := &redisSet{dir: dir}
	for i := range max(masters, 1) {
		port, err := testkit.FreePort()
		if err != nil {
			s.stop()
			return nil, err
		}
		args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
		if masters > 0 {
			args = append(args, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)), "--cluster-node-timeout", "5000")
		}
		p, err := startService("redis-server", args)
		if err != nil {
			s.stop()
			return nil, err
		}
		s.procs, s.ports = append(s.procs, p), append(s.ports, port)
	}
	for _, port := range s.ports {
		if err := waitPort(port); err != nil {
			s.stop()
			return nil, err
		}
	}
	if masters == 0 {
		s.url = fmt.Sprintf("redis://127.0.0.1:%d/0", s.ports[0])
		return s, nil
	}
	create := []string{"--cluster", "create"}
	for _, p := range s.ports {
		create = append(create, fmt.Sprintf("127.0.0.1:%d", p))
	}
	if out, err := exec.Command("redis-cli", append(create, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput(); err != nil {
		s.stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %w: %s", err, tail(string(out)))
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range s.ports {
		for {
			out, _ := exec.Command("redis-cli", "-p", strconv.Itoa(p), "cluster", "info").Output()
			if strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				s.stop()
				return nil, fmt.Errorf("cluster not ok after 30 s: %s", out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	s.url = fmt.Sprintf("redis-cluster://127.0.0.1:%d", s.ports[0])
	for i, p := range s.ports[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		s.url += fmt.Sprintf("%saddr=127.0.0.1:%d", sep, p)
	}
	return s, nil
}

// cpu returns the CPU time each node has used so far.
func (s *redisSet) cpu() []time.Duration {
	out := make([]time.Duration, len(s.ports))
	for i, p := range s.ports {
		out[i] = redisCPUAt(p)
	}
	return out
}

func (s *redisSet) stop() {
	for _, p := range s.procs {
		p.stop()
	}
	os.RemoveAll(s.dir)
}

// redisCPUAt is the CPU time of the Redis on port so far, from INFO cpu.
func redisCPUAt(port int) time.Duration {
	out, err := exec.Command("redis-cli", "-p", strconv.Itoa(port), "info", "cpu").Output()
	if err != nil {
		return 0
	}
	var s float64
	for _, line := range strings.Split(string(out), "\n") {
		for _, f := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), f); ok {
				x, _ := strconv.ParseFloat(v, 64)
				s += x
			}
		}
	}
	return time.Duration(s * float64(time.Second))
}

func waitPort(port int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := exec.Command("redis-cli", "-p", strconv.Itoa(port), "ping").Run(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on port %d not ready", port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procCPU is the user+system CPU time process pid has used so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// clusterSample is one run of scenario 13.
type clusterSample struct {
	wall, enqueue, worker time.Duration
	// fixed is the part of wall outside the batch's pings: before its
	// first ping (the command's start, the host list, the batch's record)
	// and after its last result (the summary), from the summary's times.
	fixed        time.Duration
	nodes        []time.Duration // each Redis node's CPU during the batch
	bytesPerHost float64         // the batch's keys after, standalone only
}

func (c clusterSample) redis() time.Duration {
	var t time.Duration
	for _, n := range c.nodes {
		t += n
	}
	return t
}

// maxOverMean is the busiest node's CPU over the mean of all.
func (c clusterSample) maxOverMean() float64 {
	if len(c.nodes) < 2 {
		return 1
	}
	return float64(slices.Max(c.nodes)) / (float64(c.redis()) / float64(len(c.nodes)))
}

// clusterRun runs the batch in file of n hosts on a new Redis set of
// masters masters (0: standalone) with one default worker.
func (b *bench) clusterRun(bin string, masters int, file string) (clusterSample, error) {
	rs, err := b.startRedisSet(masters)
	if err != nil {
		return clusterSample{}, err
	}
	defer rs.stop()
	w, err := start(bin, []string{"worker", "--redis", rs.url})
	if err != nil {
		return clusterSample{}, err
	}
	defer w.stop()
	time.Sleep(time.Second) // registered, polling
	nodes0, w0 := rs.cpu(), procCPU(w.cmd.Process.Pid)
	m, err := timed(bin, "enqueue", "--redis", rs.url, "-f", file, "--wait", "-q", "-o", "json", "-c", "1")
	if err != nil {
		return clusterSample{}, err
	}
	s := clusterSample{wall: m.wall, enqueue: m.cpu, worker: procCPU(w.cmd.Process.Pid) - w0}
	var out struct {
		Summary struct{ Started, Finished time.Time }
	}
	if err := json.Unmarshal(m.stdout, &out); err != nil {
		return clusterSample{}, fmt.Errorf("enqueue --wait -o json: %w", err)
	}
	s.fixed = m.wall - out.Summary.Finished.Sub(out.Summary.Started)
	for i, c := range rs.cpu() {
		s.nodes = append(s.nodes, c-nodes0[i])
	}
	if masters == 0 {
		s.bytesPerHost = batchBytesAt(rs.ports[0])
	}
	return s, nil
}

// batchBytesAt is the memory the newest batch's keys take in the Redis on
// port, per host.
func batchBytesAt(port int) float64 {
	cli := func(args ...string) string {
		out, _ := exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(port)}, args...)...).Output()
		return strings.TrimSpace(string(out))
	}
	id := cli("zrevrange", "pingfleet:batches", "0", "0")
	total := 0.0
	for _, k := range []string{"meta", "hosts", "pending", "results", "rtt", "events", "workers"} {
		v, _ := strconv.ParseFloat(cli("memory", "usage", "pingfleet:{"+id+"}:"+k, "samples", "0"), 64)
		total += v
	}
	hosts, _ := strconv.ParseFloat(cli("hget", "pingfleet:{"+id+"}:meta", "total"), 64)
	if hosts == 0 {
		return 0
	}
	return total / hosts
}

type clusterRow struct {
	masters int
	bin     string
	label   string // "" for this build, "baseline" for -baseline's
	runs    []clusterSample
}

func (r clusterRow) name() string {
	if r.label == "" {
		return topology(r.masters)
	}
	return topology(r.masters) + ", " + r.label
}

// median returns the run of median wall time.
func (r clusterRow) median() clusterSample {
	s := slices.Clone(r.runs)
	slices.SortFunc(s, func(x, y clusterSample) int { return int(x.wall - y.wall) })
	return s[len(s)/2]
}

func (b *bench) pastOneRedis() error {
	n := b.size(100000, 2000)
	topologies := []int{0, 3, 6}
	if b.opts.smoke {
		topologies = []int{0, 3}
	}
	file, err := b.hostFile("s13.txt", loopback(n, 60))
	if err != nil {
		return err
	}
	var rows []clusterRow
	for _, t := range topologies {
		rows = append(rows, clusterRow{masters: t, bin: b.bin})
	}
	if b.opts.baseline != "" { // after this build's rows, which the model reads
		for _, t := range topologies[:2] {
			rows = append(rows, clusterRow{masters: t, bin: b.opts.baseline, label: "baseline"})
		}
	}
	for run := range b.opts.runs {
		for i := range rows {
			s, err := b.clusterRun(rows[i].bin, rows[i].masters, file)
			if err != nil {
				return err
			}
			rows[i].runs = append(rows[i].runs, s)
			fmt.Fprintf(os.Stderr, "13. past one Redis | run %d, %s: %.2fs wall, Redis CPU per node %s\n", run+1, rows[i].name(), s.wall.Seconds(), secsList(s.nodes))
		}
	}
	b.cluster, b.clusterHosts = rows, n
	return nil
}

func topology(masters int) string {
	if masters == 0 {
		return "standalone Redis"
	}
	return fmt.Sprintf("Cluster of %d masters", masters)
}

func secsList(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.2f", d.Seconds())
	}
	return strings.Join(parts, " / ")
}

// perHost is d per host of n, in µs.
func perHost(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

func (b *bench) printCluster(w io.Writer) {
	if len(b.cluster) == 0 {
		return
	}
	n := b.clusterHosts
	fmt.Fprintf(w, "\nPast one Redis (scenario 13): %d hosts `-c 1`, one default worker, `enqueue --wait`, topologies alternated, median of %d:\n\n", n, len(b.cluster[0].runs))
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| Redis\t wall s (all runs)\t × standalone\t hosts/s\t Redis CPU s per node\t busiest / mean\t enqueue µs/host\t worker µs/host\t Redis µs/host\t")
	fmt.Fprintln(tw, "| ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t")
	base := b.cluster[0].median()
	for _, r := range b.cluster {
		m := r.median()
		walls := make([]time.Duration, len(r.runs))
		for i, s := range r.runs {
			walls[i] = s.wall
		}
		fmt.Fprintf(tw, "| %s\t %.2f (%s)\t %.2f\t %.0f\t %s\t %.2f\t %.1f\t %.1f\t %.1f\t\n", r.name(), m.wall.Seconds(), secsList(walls),
			m.wall.Seconds()/base.wall.Seconds(), float64(n)/m.wall.Seconds(), secsList(m.nodes), m.maxOverMean(),
			perHost(m.enqueue, n), perHost(m.worker, n), perHost(m.redis(), n))
	}
	tw.Flush()
	b.printModel(w, base)
}

// printModel prints the capacity model: the per-host costs measured on
// standalone Redis (and, from the smallest Cluster, the part of Redis's
// that stays on the batch's own node), this run predicted from them, and
// the fleet they project for larger sweeps.
func (b *bench) printModel(w io.Writer, base clusterSample) {
	n := b.clusterHosts
	cE, cW, cR := perHost(base.enqueue, n), perHost(base.worker, n), perHost(base.redis(), n)
	// The batch's node does the batch's own work (its results and
	// counters) besides its share of the queues: its CPU above the other
	// nodes' mean is that work.
	cB := 0.0
	if len(b.cluster) > 1 {
		m := b.cluster[1].median()
		top := slices.Max(m.nodes)
		rest := (m.redis() - top) / time.Duration(len(m.nodes)-1)
		cB = perHost(top-rest, n)
	}
	cores := float64(runtime.NumCPU())
	cpuBound := float64(n) * (cE + cW + cR) / cores / 1e6
	redisBound := float64(n) * cR / 1e6
	pred := math.Max(cpuBound, redisBound)
	pinging := (base.wall - base.fixed).Seconds()
	fmt.Fprintf(w, "\nCapacity model, from the standalone median: enqueuer %.1f µs/host, worker %.1f µs/host, Redis %.1f µs/host "+
		"(of which %.1f µs stays on the batch's node in a Cluster, from the 3-master runs); the batch's keys keep %.0f B/host after.\n",
		cE, cW, cR, cB, base.bytesPerHost)
	fmt.Fprintf(w, "This run predicted, from its first ping to its last result: max(all CPU over %d cores %.2f s, one Redis core %.2f s) = %.2f s; measured %.2f s (%+.0f %%), "+
		"and %.2f s more before and after (the command's start, the host list, the batch's record; the summary).\n\n",
		int(cores), cpuBound, redisBound, pred, pinging, 100*(pinging-pred)/pred, base.fixed.Seconds())
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| sweep\t in\t hosts/s\t worker cores\t Redis cores (queues)\t batch node core\t results kept\t")
	fmt.Fprintln(tw, "| ---\t ---\t ---\t ---\t ---\t ---\t ---\t")
	for _, t := range []struct {
		name  string
		hosts float64
		in    time.Duration
	}{
		{"1M hosts", 1e6, time.Minute},
		{"100M hosts", 1e8, time.Hour},
		{"IPv4 /0 (4.3B)", 4.294967296e9, 24 * time.Hour},
		{"IPv4 /0 (4.3B)", 4.294967296e9, time.Hour},
	} {
		rate := t.hosts / t.in.Seconds()
		node := rate * cB / 1e6
		nodeNote := fmt.Sprintf("%.2f", node)
		if node > 1 {
			nodeNote = fmt.Sprintf("%.1f: over one core, split into %.0f batches", node, math.Ceil(node/0.8))
		}
		fmt.Fprintf(tw, "| %s\t %s\t %.0f\t %.0f\t %.0f\t %s\t %.1f GB\t\n", t.name, t.in, rate, math.Ceil(rate*cW/1e6),
			math.Ceil(rate*(cR-cB)/1e6/0.8), nodeNote, t.hosts*base.bytesPerHost/1e9)
	}
	tw.Flush()
}
