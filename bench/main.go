//go:build linux

// Command bench measures pingfleet end to end next to fping, in the same run,
// on the same host lists and options, and prints Markdown tables with the
// ratios. Every scenario runs pingfleet first exactly as a user would, with
// no tuning flag, and prints that row before any tuned one. See
// bench/README.md for the scenarios and recorded results.
//
//	go run ./bench            # every scenario (root for fping and the lab)
//	go run ./bench -smoke     # small sizes, for CI: checks the harness runs
//	go run ./bench -only 1,5  # some scenarios
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
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

func main() { os.Exit(run()) }

type options struct {
	smoke    bool
	only     []int
	runs     int
	baseline string
}

func run() int {
	var o options
	var only string
	flag.BoolVar(&o.smoke, "smoke", false, "small sizes: check that every scenario runs (for CI)")
	flag.StringVar(&only, "only", "", "comma-separated scenario numbers (default all)")
	flag.IntVar(&o.runs, "runs", 3, "runs per measurement; the median is reported")
	flag.StringVar(&o.baseline, "baseline", "", "a pingfleet `binary` of another build, measured beside this one in the scenarios that compare builds (12, 13)")
	flag.Parse()
	for _, s := range strings.Split(only, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			o.only = append(o.only, n)
		}
	}
	if o.smoke {
		o.runs = 1
	}
	b, err := newBench(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer b.close()
	if err := b.all(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

type bench struct {
	opts   options
	dir    string
	bin    string
	fping  string
	redis  *process
	url    string
	port   int
	rows   []row
	growth []growthRow
	// scenario 13's rows, by topology, and its batch's size
	cluster      []clusterRow
	clusterHosts int
}

// row is one measured command.
type row struct {
	scenario string
	tool     string
	hosts    int
	m        measure
	ref      *measure // what the ratio is against
	isRef    bool     // the reference of its scenario
	note     string
}

func newBench(o options) (*bench, error) {
	dir, err := os.MkdirTemp("", "pingfleet-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{opts: o, dir: dir, bin: filepath.Join(dir, "pingfleet")}
	out, err := exec.Command("go", "build", "-o", b.bin, "./cmd/pingfleet").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go build: %w\n%s", err, out)
	}
	b.fping, _ = exec.LookPath("fping")
	if err := b.startRedis(); err != nil {
		return nil, err
	}
	return b, nil
}

// startRedis starts the Redis server the fleet scenarios use, a new one
// (so that its peak memory is the next scenario's).
func (b *bench) startRedis() error {
	if b.redis != nil {
		b.redis.stop()
	}
	port, err := testkit.FreePort()
	if err != nil {
		return err
	}
	b.redis, err = startService("redis-server", []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"})
	if err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	b.port = port
	b.url = fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server not ready: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bench) close() {
	if b.redis != nil {
		b.redis.stop()
	}
	os.RemoveAll(b.dir)
}

func (b *bench) want(n int) bool { return len(b.opts.only) == 0 || slices.Contains(b.opts.only, n) }

func (b *bench) size(full, smoke int) int {
	if b.opts.smoke {
		return smoke
	}
	return full
}

func (b *bench) all() error {
	host, _ := os.Hostname()
	fmt.Printf("# pingfleet benchmarks, %s\n\nmachine: %s, %d CPUs, %s %s/%s; fping: %s\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), host, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, fpingVersion(b.fping))
	steps := []struct {
		n  int
		fn func() error
	}{
		{1, b.smallBatch}, {2, b.tenThousand}, {3, b.hundredThousand}, {4, b.enqueueOnly}, {5, b.labLatency},
		{6, b.inFlightMemory}, {7, b.twentyThousand}, {8, b.threePings}, {9, b.growthTable}, {10, b.streamsLoad}, {11, b.heldConnections}, {12, b.fairSharing}, {13, b.pastOneRedis},
	}
	for _, s := range steps {
		if !b.want(s.n) {
			continue
		}
		if err := s.fn(); err != nil {
			return fmt.Errorf("scenario %d: %w", s.n, err)
		}
	}
	b.print(os.Stdout)
	b.printGrowth(os.Stdout)
	b.printCluster(os.Stdout)
	return nil
}

// loopback returns n distinct 127/8 hosts, one per line, none in 127.0.0.0/16.
func loopback(n, base int) string {
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, "127.%d.%d.%d\n", 1+base+i/(250*250), (i/250)%250, i%250+1)
	}
	return sb.String()
}

func (b *bench) hostFile(name, hosts string) (string, error) {
	p := filepath.Join(b.dir, name)
	return p, os.WriteFile(p, []byte(hosts), 0o644)
}

// median runs fn opts.runs times and keeps the run of median wall time.
func (b *bench) median(fn func() (measure, error)) (measure, error) {
	var ms []measure
	for range b.opts.runs {
		m, err := fn()
		if err != nil {
			return m, err
		}
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(x, y measure) int { return int(x.wall - y.wall) })
	return ms[len(ms)/2], nil
}

func (b *bench) redisCLI(args ...string) (string, error) {
	out, err := exec.Command("redis-cli", append([]string{"-p", strconv.Itoa(b.port)}, args...)...).Output()
	return string(out), err
}

func (b *bench) flush() error {
	_, err := b.redisCLI("flushall")
	return err
}

// redisInfo reads one field of INFO section.
func (b *bench) redisInfo(section, field string) float64 {
	out, err := b.redisCLI("info", section)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// redisCPU is the CPU time the Redis server has used so far.
func (b *bench) redisCPU() time.Duration {
	s := b.redisInfo("cpu", "used_cpu_sys") + b.redisInfo("cpu", "used_cpu_user")
	return time.Duration(s * float64(time.Second))
}

// withRedisCPU adds the Redis server's CPU time during fn to its measure.
func (b *bench) withRedisCPU(fn func() (measure, error)) (measure, error) {
	before := b.redisCPU()
	m, err := fn()
	m.redisCPU = b.redisCPU() - before
	return m, err
}

// withWorkers runs fn while n worker processes (given args, none by
// default) serve b's Redis, and adds their CPU time and peak RSS to what fn
// measured.
func (b *bench) withWorkers(n int, args []string, fn func() (measure, error)) (measure, error) {
	if err := b.flush(); err != nil {
		return measure{}, err
	}
	var ws []*process
	for range n {
		w, err := start(b.bin, append([]string{"worker", "--redis", b.url}, args...))
		if err != nil {
			return measure{}, err
		}
		ws = append(ws, w)
	}
	time.Sleep(500 * time.Millisecond) // let the workers register and start polling
	m, err := b.withRedisCPU(fn)
	for _, w := range ws {
		wm := w.stop()
		m.cpu += wm.cpu
		m.peak("worker", wm.maxRSSKB)
	}
	return m, err
}

// enqueueWait measures `pingfleet enqueue --wait` of file with ping args
// against b's Redis, from submission to summary.
func (b *bench) enqueueWait(file string, args ...string) (measure, error) {
	m, err := timed(b.bin, append([]string{"enqueue", "--redis", b.url, "-f", file, "--wait", "-q", "-o", "json"}, args...)...)
	m.peak("enqueue", m.maxRSSKB)
	return m, err
}

// runEmbedded measures `pingfleet run` of file with args, process start to
// exit, on its private Redis (kind "" is the default).
func (b *bench) runEmbedded(kind, file string, args ...string) (measure, error) {
	cmd := []string{"run", "-f", file, "-q", "-o", "json"}
	if kind != "" {
		cmd = append(cmd, "--embedded", kind)
	}
	m, err := timed(b.bin, append(cmd, args...)...)
	m.peak("run", m.maxRSSKB)
	return m, err
}

func (b *bench) fpingRun(hostFile string, args ...string) (measure, error) {
	if b.fping == "" {
		return measure{}, errors.New("fping not found: apt-get install fping")
	}
	return timed(b.fping, append(args, "-q", "-f", hostFile)...)
}

// fpingHalves runs fping on each half of a list, one after the other, and
// adds them up: it cannot keep more than 65,535 pings in flight.
func (b *bench) fpingHalves(f1, f2 string, args ...string) (measure, error) {
	m1, err := b.fpingRun(f1, args...)
	if err != nil {
		return m1, err
	}
	m2, err := b.fpingRun(f2, args...)
	return measure{wall: m1.wall + m2.wall, cpu: m1.cpu + m2.cpu, maxRSSKB: max(m1.maxRSSKB, m2.maxRSSKB), exit: max(m1.exit, m2.exit)}, err
}

// addRef records the reference measurement of a scenario.
func (b *bench) addRef(scenario, tool string, hosts int, m measure, note string) {
	b.add(scenario, tool, hosts, m, nil, note)
	b.rows[len(b.rows)-1].isRef = true
}

func (b *bench) add(scenario, tool string, hosts int, m measure, ref *measure, note string) {
	b.rows = append(b.rows, row{scenario: scenario, tool: tool, hosts: hosts, m: m, ref: ref, note: note})
	fmt.Fprintf(os.Stderr, "%s | %s: %.3fs wall, %.2fs CPU, %d MB, exit %d\n", scenario, tool, m.wall.Seconds(), m.cpu.Seconds(), m.maxRSSKB/1024, m.exit)
}

func (b *bench) print(w io.Writer) {
	if len(b.rows) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| scenario\t tool\t wall s\t × ref\t CPU s\t Redis CPU s\t peak RSS MB\t exit\t note\t")
	fmt.Fprintln(tw, "| ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t")
	for _, r := range b.rows {
		ratio := "-"
		switch {
		case r.isRef:
			ratio = "ref"
		case r.ref != nil && r.ref.wall > 0:
			ratio = fmt.Sprintf("%.2f", r.m.wall.Seconds()/r.ref.wall.Seconds())
		}
		redisCPU := "-"
		if r.m.redisCPU > 0 {
			redisCPU = fmt.Sprintf("%.2f", r.m.redisCPU.Seconds())
		}
		fmt.Fprintf(tw, "| %s\t %s\t %.3f\t %s\t %.2f\t %s\t %s\t %d\t %s\t\n", r.scenario, r.tool, r.m.wall.Seconds(), ratio,
			r.m.cpu.Seconds(), redisCPU, peaks(r.m), r.m.exit, r.note)
	}
	tw.Flush()
}

// peaks lists a measure's peak RSS per pingfleet or Redis process, in MB.
func peaks(m measure) string {
	if len(m.peaks) == 0 {
		return strconv.FormatInt(m.maxRSSKB/1024, 10)
	}
	var names []string
	for n := range m.peaks {
		names = append(names, n)
	}
	slices.Sort(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, m.peaks[n]/1024))
	}
	return strings.Join(parts, ", ")
}
