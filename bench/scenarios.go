//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/lab"
)

// Scenario 1: 200 hosts, 2 pings 1 s apart: how close to fping's one
// second a small batch ends, with a worker running and with run.
func (b *bench) smallBatch() error {
	n := 200
	file, err := b.hostFile("s1.txt", loopback(n, 0))
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
		return b.withWorkers(1, nil, func() (measure, error) { return b.enqueueWait(file, "-c", "2", "-p", "1s") })
	})
	if err != nil {
		return err
	}
	b.add(name, "pingfleet enqueue --wait (1 worker running)", n, e2e, &ref, "submit → summary; CPU incl. worker")
	return b.runKinds(name, n, &ref, file, "-c", "2", "-p", "1s")
}

// runKinds measures `pingfleet run` of file on its default private Redis
// (redis-server), then on miniredis, the fallback.
func (b *bench) runKinds(name string, n int, ref *measure, file string, args ...string) error {
	for _, kind := range []string{"", "miniredis"} {
		runs := b.opts.runs
		if kind == "miniredis" && n >= 10000 {
			b.opts.runs = 1 // slow: one run is enough to see it
		}
		m, err := b.median(func() (measure, error) { return b.runEmbedded(kind, file, args...) })
		b.opts.runs = runs
		if err != nil {
			return err
		}
		tool := "pingfleet run (private redis-server)"
		if kind != "" {
			tool = "pingfleet run --embedded miniredis"
		}
		b.add(name, tool, n, m, ref, fmt.Sprintf("process start → exit; %.0f hosts/s", float64(n)/m.wall.Seconds()))
	}
	return nil
}

// Scenario 2: 10,000 hosts, 2 pings 1 s apart.
func (b *bench) tenThousand() error {
	return b.twoPings(2, b.size(10000, 1000), 10)
}

// Scenario 7: 20,000 hosts, 2 pings 1 s apart: with scenario 2, how time
// grows with the batch.
func (b *bench) twentyThousand() error {
	return b.twoPings(7, b.size(20000, 2000), 30)
}

func (b *bench) twoPings(scenario, n, base int) error {
	file, err := b.hostFile(fmt.Sprintf("s%d.txt", scenario), loopback(n, base))
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%d. %d hosts, -c 2 -p 1s", scenario, n)
	ref, err := b.median(func() (measure, error) { return b.fpingRun(file, "-c", "2", "-p", "1000", "-t", "500", "-i", "0") })
	if err != nil {
		return err
	}
	b.addRef(name, "fping -i 0", n, ref, "")
	if err := b.fleetRuns(name, n, &ref, file, nil, "-c", "2", "-p", "1s"); err != nil {
		return err
	}
	return b.runKinds(name, n, &ref, file, "-c", "2", "-p", "1s")
}

// fleetRuns measures `pingfleet enqueue --wait` of the hosts in file with
// ping args, from submission to summary, with one and then two worker
// processes started with workerArgs (none: the defaults), and adds them
// under name.
func (b *bench) fleetRuns(name string, n int, ref *measure, file string, workerArgs []string, args ...string) error {
	for _, workers := range []int{1, 2} {
		m, err := b.median(func() (measure, error) {
			return b.withWorkers(workers, workerArgs, func() (measure, error) { return b.enqueueWait(file, args...) })
		})
		if err != nil {
			return err
		}
		tool := fmt.Sprintf("pingfleet, %d default worker(s)", workers)
		if len(workerArgs) > 0 {
			tool = fmt.Sprintf("pingfleet, %d worker(s) %s", workers, strings.Join(workerArgs, " "))
		}
		b.add(name, tool, n, m, ref, fmt.Sprintf("submit → summary; CPU incl. workers; %.0f hosts/s", float64(n)/m.wall.Seconds()))
	}
	return nil
}

// Scenario 3: 100,000 hosts, 1 ping, through a real Redis.
func (b *bench) hundredThousand() error {
	n := b.size(100000, 2000)
	f1, f2, all, err := b.halves("s3", n, 40)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("3. %d hosts, -c 1", n)
	ref, err := b.median(func() (measure, error) { return b.fpingHalves(f1, f2, "-c", "1", "-t", "500", "-i", "0") })
	if err != nil {
		return err
	}
	b.addRef(name, "fping -i 0, 2 runs of n/2", n, ref, "fping cannot keep 65,536+ in flight")
	if err := b.fleetRuns(name, n, &ref, all, nil, "-c", "1"); err != nil {
		return err
	}
	m, err := b.median(func() (measure, error) { return b.runEmbedded("", all, "-c", "1") })
	if err != nil {
		return err
	}
	b.add(name, "pingfleet run (private redis-server)", n, m, &ref, fmt.Sprintf("process start → exit; %.0f hosts/s", float64(n)/m.wall.Seconds()))
	// Tuned: more fetchers per worker.
	return b.fleetRuns(name, n, &ref, all, []string{"--servers", "128"}, "-c", "1")
}

// halves writes n hosts as two files of n/2 (for fping) and one of all.
func (b *bench) halves(prefix string, n, base int) (string, string, string, error) {
	half := n / 2
	a, z := loopback(half, base), loopback(n-half, base+10)
	f1, err := b.hostFile(prefix+"a.txt", a)
	if err != nil {
		return "", "", "", err
	}
	f2, err := b.hostFile(prefix+"b.txt", z)
	if err != nil {
		return "", "", "", err
	}
	all, err := b.hostFile(prefix+".txt", a+z)
	return f1, f2, all, err
}

// Scenario 4: enqueue 100,000 hosts (no worker).
func (b *bench) enqueueOnly() error {
	n := b.size(100000, 2000)
	file, err := b.hostFile("s4.txt", loopback(n, 60))
	if err != nil {
		return err
	}
	m, err := b.median(func() (measure, error) {
		if err := b.flush(); err != nil {
			return measure{}, err
		}
		return b.withRedisCPU(func() (measure, error) { return timed(b.bin, "enqueue", "--redis", b.url, "-f", file, "-c", "1") })
	})
	if err != nil {
		return err
	}
	b.add(fmt.Sprintf("4. enqueue %d hosts", n), "pingfleet enqueue", n, m, nil, fmt.Sprintf("%.0f tasks/s", float64(n)/m.wall.Seconds()))
	return b.flush()
}

// Scenario 5: the lab, 1,000 hosts at 50 ms RTT, 3 pings 200 ms apart.
func (b *bench) labLatency() error {
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
		return timed("ip", append([]string{"netns", "exec", l.Namespace(), name}, args...)...)
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
		m, err := inLab(b.bin, "run", "-f", file, "-c", "3", "-p", "200ms", "-t", "1s", "-q", "-o", "json")
		m.peak("run", m.maxRSSKB)
		return m, err
	})
	if err != nil {
		return err
	}
	b.add(name, "pingfleet run (private redis-server)", n, m, &ref, "process start → exit")

	// A Redis and a worker inside the lab, already running.
	port, err := testkit.FreePort()
	if err != nil {
		return err
	}
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	rs, err := start("ip", []string{"netns", "exec", l.Namespace(), "redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"})
	if err != nil {
		return err
	}
	defer rs.stop()
	w, err := start("ip", []string{"netns", "exec", l.Namespace(), b.bin, "worker", "--redis", url})
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
	b.add(name, "pingfleet enqueue --wait (default worker running)", n, m, &ref, "submit → summary; CPU without the worker's")
	return nil
}

// Scenario 6: one default worker's peak RSS and CPU with 10,000 pings in
// flight.
func (b *bench) inFlightMemory() error {
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
	w, err := start(b.bin, []string{"worker", "--redis", b.url})
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	e, err := b.withRedisCPU(func() (measure, error) { return b.enqueueWait(file, "-c", "3", "-p", "1s", "-t", "1s") })
	wm := w.stop()
	if err != nil {
		return err
	}
	wm.wall, wm.exit, wm.redisCPU = e.wall, e.exit, e.redisCPU
	b.add(name, "pingfleet worker (default, alone)", n, wm, &ref, fmt.Sprintf("peak RSS %d MB; %.3f CPU s per 1,000 hosts (enqueue+wait: %.3f more)",
		wm.maxRSSKB/1024, wm.cpu.Seconds()*1000/float64(n), e.cpu.Seconds()*1000/float64(n)))
	return nil
}

// Scenario 8: 100,000 hosts, 3 pings 1 s apart: pings in flight at once,
// more than one worker holds by default. fping keeps at most 65,535 pings
// in flight and a ping's sequence number for 10 s, so it runs on parts of
// 20,000 hosts (60,000 pings), one after the other.
func (b *bench) threePings() error {
	n := b.size(100000, 2000)
	part := b.size(20000, 1000)
	var parts []string
	var all strings.Builder
	for i := 0; i < n; i += part {
		hosts := loopback(min(part, n-i), 100+i/part*2)
		f, err := b.hostFile(fmt.Sprintf("s8-%d.txt", i/part), hosts)
		if err != nil {
			return err
		}
		parts = append(parts, f)
		all.WriteString(hosts)
	}
	file, err := b.hostFile("s8.txt", all.String())
	if err != nil {
		return err
	}
	name := fmt.Sprintf("8. %d hosts, -c 3 -p 1s", n)
	ref, err := b.median(func() (measure, error) {
		var sum measure
		for _, f := range parts {
			m, err := b.fpingRun(f, "-c", "3", "-p", "1000", "-t", "500", "-i", "0")
			if err != nil {
				return m, err
			}
			sum = measure{wall: sum.wall + m.wall, cpu: sum.cpu + m.cpu, maxRSSKB: max(sum.maxRSSKB, m.maxRSSKB), exit: max(sum.exit, m.exit)}
		}
		return sum, nil
	})
	if err != nil {
		return err
	}
	b.addRef(name, fmt.Sprintf("fping -i 0, %d runs of %d", len(parts), part), n, ref, "fping runs out of sequence numbers past about 21,000 hosts at -c 3")
	if err := b.fleetRuns(name, n, &ref, file, nil, "-c", "3", "-p", "1s"); err != nil {
		return err
	}
	m, err := b.median(func() (measure, error) { return b.runEmbedded("", file, "-c", "3", "-p", "1s") })
	if err != nil {
		return err
	}
	b.add(name, "pingfleet run (private redis-server)", n, m, &ref, fmt.Sprintf("process start → exit; %.0f hosts/s", float64(n)/m.wall.Seconds()))
	// Tuned: as many in flight as the batch holds at once.
	return b.fleetRuns(name, n, &ref, file, []string{"--concurrency", strconv.Itoa(n / 2)}, "-c", "3", "-p", "1s")
}

// growthRow is one size of one mode of the growth table.
type growthRow struct {
	mode  string
	hosts int
	m     measure
	// redisAfter is what Redis holds once the batch is final: all of it
	// (used_memory) and per host of the batch's own keys.
	redisAfterMB float64
	bytesPerHost float64
}

// Scenario 9: how time and memory grow with the batch, 10,000 to 1,000,000
// hosts at -c 1, with defaults: a worker and enqueue --wait on a Redis of
// their own, run on redis-server, run on miniredis.
func (b *bench) growthTable() error {
	sizes := []int{10000, 100000, 1000000}
	if b.opts.smoke {
		sizes = []int{500, 1000, 2000}
	}
	for i, n := range sizes {
		file, err := b.hostFile(fmt.Sprintf("g%d.txt", i), loopback(n, 0))
		if err != nil {
			return err
		}
		// A Redis started for the row: its peak memory is the batch's.
		if err := b.startRedis(); err != nil {
			return err
		}
		m, err := b.withWorkers(1, nil, func() (measure, error) { return b.enqueueWait(file, "-c", "1") })
		if err != nil {
			return err
		}
		m.peak("redis", b.redis.peakRSS())
		r := growthRow{mode: "default worker + enqueue --wait", hosts: n, m: m, redisAfterMB: b.redisInfo("memory", "used_memory") / (1 << 20)}
		r.bytesPerHost = b.batchBytes() / float64(n)
		b.addGrowth(r)
		for _, kind := range []string{"", "miniredis"} {
			m, err := b.runEmbedded(kind, file, "-c", "1")
			if err != nil {
				return err
			}
			mode := "run (private redis-server)"
			if kind != "" {
				mode = "run --embedded miniredis"
			}
			b.addGrowth(growthRow{mode: mode, hosts: n, m: m})
		}
	}
	return b.startRedis()
}

// batchBytes is the memory the newest batch's keys take in b's Redis.
func (b *bench) batchBytes() float64 {
	id, _ := b.redisCLI("zrevrange", "pingfleet:batches", "0", "0")
	id = strings.TrimSpace(id)
	var total float64
	for _, k := range []string{"meta", "hosts", "pending", "results", "rtt", "events", "workers"} {
		out, err := b.redisCLI("memory", "usage", "pingfleet:{"+id+"}:"+k, "samples", "0")
		if err != nil {
			continue
		}
		v, _ := strconv.ParseFloat(strings.TrimSpace(out), 64)
		total += v
	}
	return total
}

func (b *bench) addGrowth(r growthRow) {
	b.growth = append(b.growth, r)
	fmt.Fprintf(os.Stderr, "9. growth | %s, %d hosts: %.3fs wall, %s MB\n", r.mode, r.hosts, r.m.wall.Seconds(), peaks(r.m))
}

func (b *bench) printGrowth(w io.Writer) {
	if len(b.growth) == 0 {
		return
	}
	fmt.Fprintln(w, "\nGrowth (scenario 9), -c 1, defaults only:")
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "| mode\t hosts\t wall s\t × previous size's time\t hosts/s\t peak RSS MB\t Redis MB after\t batch bytes/host after\t")
	fmt.Fprintln(tw, "| ---\t ---\t ---\t ---\t ---\t ---\t ---\t ---\t")
	prev := map[string]growthRow{}
	for _, r := range b.growth {
		ratio := "-"
		if p, ok := prev[r.mode]; ok && p.m.wall > 0 {
			ratio = fmt.Sprintf("%.2f (for %.0f× the hosts)", r.m.wall.Seconds()/p.m.wall.Seconds(), float64(r.hosts)/float64(p.hosts))
		}
		prev[r.mode] = r
		after, per := "-", "-"
		if r.redisAfterMB > 0 {
			after, per = fmt.Sprintf("%.1f", r.redisAfterMB), fmt.Sprintf("%.0f", r.bytesPerHost)
		}
		fmt.Fprintf(tw, "| %s\t %d\t %.2f\t %s\t %.0f\t %s\t %s\t %s\t\n", r.mode, r.hosts, r.m.wall.Seconds(), ratio,
			float64(r.hosts)/r.m.wall.Seconds(), peaks(r.m), after, per)
	}
	tw.Flush()
}
