//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pingfleet/pingfleet/internal/deathsig"
)

// measure is what one run of a command cost.
type measure struct {
	wall     time.Duration
	cpu      time.Duration // user+system of the command (and, where noted, its workers)
	maxRSSKB int64         // the largest peak RSS of its processes
	exit     int
	redisCPU time.Duration // CPU the Redis server spent meanwhile
	// peaks holds each process's peak RSS (KB) by name: "run",
	// "redis-server" (a private one), "worker", "enqueue", "redis".
	peaks map[string]int64
	// stdout is what the command printed (timed only).
	stdout []byte
}

func (m *measure) peak(name string, kb int64) {
	if m.peaks == nil {
		m.peaks = make(map[string]int64)
	}
	m.peaks[name] = max(m.peaks[name], kb)
	m.maxRSSKB = max(m.maxRSSKB, kb)
}

// process is a started command whose resource use is read when it stops.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func start(name string, args []string) (*process, error) {
	return startCmd(exec.Command(name, args...))
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
	return startCmd(cmd)
}

func startCmd(cmd *exec.Cmd) (*process, error) {
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

// peakRSS is the process's peak RSS so far, in KB (0 once it is gone).
func (p *process) peakRSS() int64 { return vmHWM(p.cmd.Process.Pid) }

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

// timed runs a command to its end and measures it, with the peak RSS of
// each process it starts (sampled every 20 ms: a private redis-server ends
// with the command, so its own counters cannot be read after). A non-zero
// exit is not an error here (fping exits 1 when a host is down); it is
// reported.
func timed(name string, args ...string) (measure, error) {
	cmd := exec.Command(name, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return measure{}, fmt.Errorf("%s: %w", name, err)
	}
	peaks := map[string]int64{}
	stopSampling := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			for _, pid := range descendants(cmd.Process.Pid) {
				if comm := procName(pid); comm != "" {
					peaks[comm] = max(peaks[comm], vmHWM(pid))
				}
			}
			select {
			case <-stopSampling:
				return
			case <-t.C:
			}
		}
	})
	err := cmd.Wait()
	wall := time.Since(t0)
	close(stopSampling)
	wg.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return measure{}, fmt.Errorf("%s: %w", name, err)
	}
	m := usage(cmd.ProcessState)
	m.wall = wall
	m.stdout = out.Bytes()
	for comm, kb := range peaks {
		if comm == "pingfleet" || comm == filepath.Base(name) {
			continue // the command itself: its rusage says it exactly
		}
		m.peak(comm, kb)
	}
	if m.exit > 1 {
		return m, fmt.Errorf("%s %s: exit %d: %s", name, strings.Join(args[:min(len(args), 6)], " "), m.exit, tail(errOut.String()))
	}
	return m, nil
}

// descendants returns the PIDs of pid's children, theirs, and so on.
func descendants(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
				out = append(out, descendants(c)...)
			}
		}
	}
	return out
}

func procName(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// vmHWM reads a process's peak resident set size, in KB.
func vmHWM(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func tail(s string) string {
	if len(s) > 500 {
		return s[len(s)-500:]
	}
	return s
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

func fpingVersion(path string) string {
	if path == "" {
		return "not found"
	}
	out, _ := exec.Command(path, "--version").CombinedOutput()
	return strings.TrimSpace(string(out))
}
