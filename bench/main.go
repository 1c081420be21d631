// Command bench measures pingfleet end to end next to fping, in the same run,
// on the same host lists and options, and prints a Markdown table with the
// ratios. See bench/README.md for the scenarios and recorded results.
//
//	go run ./bench            # every scenario (root for fping and the lab)
//	go run ./bench -smoke     # small sizes, for CI: checks the harness runs
//	go run ./bench -only 1,5  # some scenarios
package main

import (
	"bytes"
	"context"
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
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/lab"
)

func main() { os.Exit(run()) }

type options struct {
	smoke bool
	only  []int
	runs  int
}

func run() int {
	var o options
	var only string
	flag.BoolVar(&o.smoke, "smoke", false, "small sizes: check that every scenario runs (for CI)")
	flag.StringVar(&only, "only", "", "comma-separated scenario numbers (default all)")
	flag.IntVar(&o.runs, "runs", 3, "runs per measurement; the median is reported")
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
	opts  options
	dir   string
	bin   string
	fping string
	redis *process
	url   string
	rows  []row
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

// measure is what one run of a command cost.
type measure struct {
	wall     time.Duration
	cpu      time.Duration // user+system of the command (and, where noted, its workers)
	maxRSSKB int64
	exit     int
	redisCPU time.Duration // CPU the Redis server spent meanwhile
}

func newBench(o options) (*bench, error) {
	dir, err := os.MkdirTemp("", "pingfleet-bench-")
	if err != nil {
		return nil, err
	}
	b := &bench{opts: o, dir: dir, bin: filepath.Join(dir, "pingfleet")}
	out, err := exec.Command("go", "build", "-o", b.bin, "./cmd/pingfleet").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	b.fping, _ = exec.LookPath("fping")
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b.redis, err = startService("redis-server", []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"})
	if err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	b.url = fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("redis-server not ready: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return b, nil
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
		{1, b.scenario1}, {2, b.scenario2}, {3, b.scenario3}, {4, b.scenario4}, {5, b.scenario5}, {6, b.scenario6},
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
	port := strings.TrimSuffix(strings.TrimPrefix(b.url, "redis://127.0.0.1:"), "/0")
	out, err := exec.Command("redis-cli", append([]string{"-p", port}, args...)...).Output()
	return string(out), err
}

func (b *bench) flush() error {
	_, err := b.redisCLI("flushall")
	return err
}

// redisCPU is the CPU time the Redis server has used so far.
func (b *bench) redisCPU() time.Duration {
	out, err := b.redisCLI("info", "cpu")
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_sys" || k == "used_cpu_user" {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

// withRedisCPU adds the Redis server's CPU time during fn to its measure.
func (b *bench) withRedisCPU(fn func() (measure, error)) (measure, error) {
	before := b.redisCPU()
	m, err := fn()
	m.redisCPU = b.redisCPU() - before
	return m, err
}

// withWorkers runs fn while n worker processes serve b's Redis, and adds
// their CPU time to what fn measured.
func (b *bench) withWorkers(n int, args []string, fn func() (measure, error)) (measure, error) {
	if err := b.flush(); err != nil {
		return measure{}, err
	}
	var ws []*process
	for range n {
		w, err := start(b.bin, append([]string{"worker", "--redis", b.url}, args...), nil)
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
		m.maxRSSKB = max(m.maxRSSKB, wm.maxRSSKB)
	}
	return m, err
}

func (b *bench) fpingRun(hostFile string, args ...string) (measure, error) {
	if b.fping == "" {
		return measure{}, errors.New("fping not found: apt-get install fping")
	}
	m, _, err := timed(b.fping, append(args, "-q", "-f", hostFile), "")
	return m, err
}

// Scenario 1: 200 hosts, 2 pings 1 s apart.
func (b *bench) scenario1() error {
	n := 200
	hosts := loopback(n, 0)
	file, err := b.hostFile("s1.txt", hosts)
	if err != nil {
		return err
	}
	name := "1. 200 hosts, -c 2 -p 1s"
	ref, err := b.median(func() (measure, error) { return b.fpingRun(file, "-c", "2", "-p", "1000", "-t", "500", "-i", "0") })
	if err != nil {
		return err
	}
	def, err := b.median(func() (measure, error) { return b.fpingRun(file, "-c", "2", "-p", "1000", "-t", "500") })
	if err != nil {
		return err
	}
	b.addRef(name, "fping -i 0", n, ref, "")
	b.add(name, "fping (default -i 10ms)", n, def, &ref, "")
	e2e, err := b.median(func() (measure, error) {
		return b.withWorkers(1, nil, func() (measure, error) {
			m, _, err := timed(b.bin, []string{"enqueue", "--redis", b.url, "-f", file, "-c", "2", "-p", "1s", "--wait", "-q", "-o", "json"}, "")
			return m, err
		})
	})
	if err != nil {
		return err
	}
	b.add(name, "pingfleet enqueue --wait (1 worker running)", n, e2e, &ref, "submit → summary; CPU incl. worker")
	emb, err := b.median(func() (measure, error) {
		m, _, err := timed(b.bin, []string{"run", "-f", file, "-c", "2", "-p", "1s", "-q", "-o", "json"}, "")
		return m, err
	})
	if err != nil {
		return err
	}
	b.add(name, "pingfleet run (embedded Redis)", n, emb, &ref, "process start → exit")
	return nil
}

// Scenario 2: 10,000 hosts, 2 pings 1 s apart.
func (b *bench) scenario2() error {
	n := b.size(10000, 1000)
	file, err := b.hostFile("s2.txt", loopback(n, 10))
	if err != nil {
		return err
	}
	name := fmt.Sprintf("2. %d hosts, -c 2 -p 1s", n)
	ref, err := b.median(func() (measure, error) { return b.fpingRun(file, "-c", "2", "-p", "1000", "-t", "500", "-i", "0") })
	if err != nil {
		return err
	}
	b.addRef(name, "fping -i 0", n, ref, "")
	return b.fleetRuns(name, n, &ref, file, "-c", "2", "-p", "1s")
}

// Scenario 3: 100,000 hosts, 1 ping, through a real Redis.
func (b *bench) scenario3() error {
	n := b.size(100000, 2000)
	half := n / 2
	f1, err := b.hostFile("s3a.txt", loopback(half, 20))
	if err != nil {
		return err
	}
	f2, err := b.hostFile("s3b.txt", loopback(n-half, 40))
	if err != nil {
		return err
	}
	all, err := b.hostFile("s3.txt", loopback(half, 20)+loopback(n-half, 40))
	if err != nil {
		return err
	}
	name := fmt.Sprintf("3. %d hosts, -c 1", n)
	ref, err := b.median(func() (measure, error) {
		m1, err := b.fpingRun(f1, "-c", "1", "-t", "500", "-i", "0")
		if err != nil {
			return m1, err
		}
		m2, err := b.fpingRun(f2, "-c", "1", "-t", "500", "-i", "0")
		return measure{wall: m1.wall + m2.wall, cpu: m1.cpu + m2.cpu, maxRSSKB: max(m1.maxRSSKB, m2.maxRSSKB), exit: max(m1.exit, m2.exit)}, err
	})
	if err != nil {
		return err
	}
	b.addRef(name, "fping -i 0, 2 runs of n/2", n, ref, "fping cannot keep 65,536+ in flight")
	return b.fleetRuns(name, n, &ref, all, "-c", "1", "--max-hosts", "1000000")
}

// fleetRuns measures `pingfleet enqueue --wait` of the hosts in file with
// ping args, from submission to summary, with one and then two worker
// processes sharing a concurrency of 10,000, and adds them under name.
func (b *bench) fleetRuns(name string, n int, ref *measure, file string, args ...string) error {
	enqueue := append([]string{"enqueue", "--redis", b.url, "-f", file, "--wait", "-q", "-o", "json"}, args...)
	for _, workers := range []int{1, 2} {
		m, err := b.median(func() (measure, error) {
			return b.withWorkers(workers, []string{"--concurrency", strconv.Itoa(10000 / workers)}, func() (measure, error) {
				m, _, err := timed(b.bin, enqueue, "")
				return m, err
			})
		})
		if err != nil {
			return err
		}
		b.add(name, fmt.Sprintf("pingfleet, %d worker process(es)", workers), n, m, ref,
			fmt.Sprintf("submit → summary; CPU incl. workers; %.0f hosts/s", float64(n)/m.wall.Seconds()))
	}
	return nil
}

// Scenario 4: enqueue 100,000 hosts (no worker).
func (b *bench) scenario4() error {
	n := b.size(100000, 2000)
	file, err := b.hostFile("s4.txt", loopback(n, 60))
	if err != nil {
		return err
	}
	m, err := b.median(func() (measure, error) {
		if err := b.flush(); err != nil {
			return measure{}, err
		}
		return b.withRedisCPU(func() (measure, error) {
			m, _, err := timed(b.bin, []string{"enqueue", "--redis", b.url, "-f", file, "-c", "1"}, "")
			return m, err
		})
	})
	if err != nil {
		return err
	}
	b.add(fmt.Sprintf("4. enqueue %d hosts", n), "pingfleet enqueue", n, m, nil, fmt.Sprintf("%.0f tasks/s", float64(n)/m.wall.Seconds()))
	return b.flush()
}

// Scenario 5: the lab, 1,000 hosts at 50 ms RTT, 3 pings 200 ms apart.
func (b *bench) scenario5() error {
	n := b.size(1000, 100)
	ctx := context.Background()
	l, err := lab.Start(ctx, lab.Config{Seed: 1})
	if err != nil {
		b.add("5. lab", "-", n, measure{}, nil, "skipped: "+err.Error())
		return nil
	}
	defer l.Close()
	var sb strings.Builder
	for i := range n { // the lab's 50 ms range without jitter: 198.18.16.0/20
		fmt.Fprintf(&sb, "198.18.%d.%d\n", 16+i/250, i%250+1)
	}
	file, err := b.hostFile("s5.txt", sb.String())
	if err != nil {
		return err
	}
	name := fmt.Sprintf("5. lab: %d hosts at 50 ms, -c 3 -p 200ms", n)
	inLab := func(name string, args ...string) (measure, error) {
		m, _, err := timed("ip", append([]string{"netns", "exec", l.Namespace(), name}, args...), "")
		return m, err
	}
	fping := func() (measure, error) {
		return inLab(b.fping, "-q", "-c", "3", "-p", "200", "-t", "1000", "-i", "0", "-f", file)
	}
	// fping reads all replies from one raw socket with the kernel's
	// default receive buffer (208 KiB here). 3,000 replies within a few
	// milliseconds can overflow it, and fping then waits out -t for the
	// lost ones. pingfleet's engine asks for 8 MiB; the reference gets as
	// much, through the system default, restored afterwards.
	ref, err := withRcvbuf(8<<20, func() (measure, error) { return b.median(fping) })
	if err != nil {
		return err
	}
	b.addRef(name, "fping -i 0 -t 1000, 8 MiB receive buffer", n, ref, "net.core.rmem_default raised for this run")
	def, err := b.median(fping)
	if err != nil {
		return err
	}
	b.add(name, "fping -i 0 -t 1000, default receive buffer", n, def, &ref, "")
	m, err := b.median(func() (measure, error) {
		return inLab(b.bin, "run", "-f", file, "-c", "3", "-p", "200ms", "-t", "1s", "-q", "-o", "json")
	})
	if err != nil {
		return err
	}
	b.add(name, "pingfleet run (embedded)", n, m, &ref, "process start → exit")

	// A Redis and a worker inside the lab, already running.
	port, err := freePort()
	if err != nil {
		return err
	}
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	rs, err := start("ip", []string{"netns", "exec", l.Namespace(), "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}, nil)
	if err != nil {
		return err
	}
	defer rs.stop()
	w, err := start("ip", []string{"netns", "exec", l.Namespace(), b.bin, "worker", "--redis", url}, nil)
	if err != nil {
		return err
	}
	defer w.stop()
	time.Sleep(time.Second) // Redis up, worker polling
	m, err = b.median(func() (measure, error) {
		return inLab(b.bin, "enqueue", "--redis", url, "-f", file, "-c", "3", "-p", "200ms", "-t", "1s", "--wait", "-q", "-o", "json")
	})
	if err != nil {
		return err
	}
	b.add(name, "pingfleet enqueue --wait (worker running)", n, m, &ref, "submit → summary; CPU without the worker's")
	return nil
}

// withRcvbuf runs fn with the system's default socket receive buffer
// (net.core.rmem_default) set to size, and restores it.
func withRcvbuf(size int, fn func() (measure, error)) (measure, error) {
	const path = "/proc/sys/net/core/rmem_default"
	old, err := os.ReadFile(path)
	if err != nil {
		return measure{}, err
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(size)), 0o644); err != nil {
		return measure{}, fmt.Errorf("raise the default receive buffer (needs root): %w", err)
	}
	m, err := fn()
	if rerr := os.WriteFile(path, old, 0o644); rerr != nil && err == nil {
		err = fmt.Errorf("restore %s: %w", path, rerr)
	}
	return m, err
}

// Scenario 6: one worker's peak RSS and CPU with 10,000 pings in flight.
func (b *bench) scenario6() error {
	n := b.size(10000, 1000)
	file, err := b.hostFile("s6.txt", loopback(n, 80))
	if err != nil {
		return err
	}
	name := fmt.Sprintf("6. %d pings in flight, -c 3 -p 1s", n)
	ref, err := b.median(func() (measure, error) { return b.fpingRun(file, "-c", "3", "-p", "1000", "-t", "1000", "-i", "0") })
	if err != nil {
		return err
	}
	b.addRef(name, "fping -i 0", n, ref, fmt.Sprintf("%.3f CPU s per 1,000 hosts", ref.cpu.Seconds()*1000/float64(n)))
	if err := b.flush(); err != nil {
		return err
	}
	w, err := start(b.bin, []string{"worker", "--redis", b.url, "--concurrency", strconv.Itoa(n)}, nil)
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	e, err := b.withRedisCPU(func() (measure, error) {
		m, _, err := timed(b.bin, []string{"enqueue", "--redis", b.url, "-f", file, "-c", "3", "-p", "1s", "-t", "1s", "--wait", "-q", "-o", "json"}, "")
		return m, err
	})
	wm := w.stop()
	if err != nil {
		return err
	}
	wm.wall, wm.exit, wm.redisCPU = e.wall, e.exit, e.redisCPU
	b.add(name, "pingfleet worker (alone)", n, wm, &ref, fmt.Sprintf("peak RSS %d MB; %.3f CPU s per 1,000 hosts (enqueue+wait: %.3f more)",
		wm.maxRSSKB/1024, wm.cpu.Seconds()*1000/float64(n), e.cpu.Seconds()*1000/float64(n)))
	return nil
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
		fmt.Fprintf(tw, "| %s\t %s\t %.3f\t %s\t %.2f\t %s\t %d\t %d\t %s\t\n", r.scenario, r.tool, r.m.wall.Seconds(), ratio,
			r.m.cpu.Seconds(), redisCPU, r.m.maxRSSKB/1024, r.m.exit, r.note)
	}
	tw.Flush()
}

// process is a started command whose resource use is read when it stops.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func start(name string, args []string, stdin io.Reader) (*process, error) {
	return startCmd(exec.Command(name, args...), stdin)
}

// startService starts a server the way a deployment runs it: in a session
// of its own. With the kernel's autogroup scheduling (on by default), CPU
// time is then shared between it and this benchmark's processes as it is
// between a systemd service or a container and the rest of the machine.
// Started as a plain child, Redis would be one process of the four or five
// busy ones in the benchmark's group, and would get a fifth of the CPUs
// rather than half. Everything through Redis waits on it, so that would
// slow every pingfleet scenario by 10–20 % (measured in scenario 3).
func startService(name string, args []string) (*process, error) {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return startCmd(cmd, nil)
}

func startCmd(cmd *exec.Cmd, stdin io.Reader) (*process, error) {
	cmd.Stdin = stdin
	cmd.Stdout = io.Discard
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := deathsig.Start(cmd); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop ends p with SIGINT (as an operator would) and returns its usage.
func (p *process) stop() measure {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return usage(p.cmd.ProcessState)
}

func usage(ps *os.ProcessState) measure {
	m := measure{cpu: ps.UserTime() + ps.SystemTime(), exit: ps.ExitCode()}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		m.maxRSSKB = ru.Maxrss
	}
	return m
}

// timed runs a command to its end and measures it. A non-zero exit is not
// an error here (fping exits 1 when a host is down); it is reported.
func timed(name string, args []string, stdin string) (measure, string, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return measure{}, "", fmt.Errorf("%s: %w", name, err)
	}
	m := usage(cmd.ProcessState)
	m.wall = wall
	if m.exit > 1 {
		return m, out.String(), fmt.Errorf("%s %s: exit %d: %s", name, strings.Join(args[:min(len(args), 6)], " "), m.exit, tail(errOut.String()))
	}
	return m, out.String(), nil
}

func tail(s string) string {
	if len(s) > 500 {
		return s[len(s)-500:]
	}
	return s
}

func fpingVersion(path string) string {
	if path == "" {
		return "not found"
	}
	out, _ := exec.Command(path, "--version").CombinedOutput()
	return strings.TrimSpace(string(out))
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
