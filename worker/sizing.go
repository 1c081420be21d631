package worker

import (
	"errors"
	"fmt"
	"math"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// How a worker sizes its in-flight limit when it is not given one.
const (
	// PingMemory is what one ping in flight costs a worker: the two
	// goroutines asynq runs a task on, its state and the engine's, about
	// 13 KB at 10,000 in flight (bench/README.md, "Memory"), and room for
	// garbage between collections.
	PingMemory = 16 << 10
	// BaseMemory is what a worker holds besides its pings in flight.
	BaseMemory = 32 << 20
	// MaxAutoConcurrency bounds the automatic in-flight limit: past it a
	// worker's acknowledgements cost Redis more than its pings gain (each
	// one scans its queue's active list), and a batch that needs more
	// pings at once is better served by more workers.
	MaxAutoConcurrency = 20000
	// MinAutoConcurrency is the least the automatic sizing gives.
	MinAutoConcurrency = 100
	// socketReserve is how many file descriptors the probing engine leaves
	// for Redis connections and the rest.
	socketReserve = 256
)

// Capacity is what a worker process may use, from which it sizes its
// in-flight limit.
type Capacity struct {
	// Memory is how many bytes the process may use; MemorySource says
	// where that comes from: "GOMEMLIMIT", "cgroup" (the container's
	// limit) or "system" (the machine's RAM, of which a worker takes a
	// quarter).
	Memory       int64
	MemorySource string
	// Files is the process's open-file limit, 0 if unknown.
	Files uint64
}

// MachineCapacity reads the process's memory limit (GOMEMLIMIT if given,
// else its cgroup's, else the machine's RAM) and open-file limit.
// goMemLimit is the limit set through GOMEMLIMIT, 0 if none.
func MachineCapacity(goMemLimit int64) (Capacity, error) {
	c := Capacity{Files: OpenFileLimit()}
	if goMemLimit > 0 {
		c.Memory, c.MemorySource = goMemLimit, "GOMEMLIMIT"
		return c, nil
	}
	if n, err := memlimit.FromCgroup(); err == nil && n > 0 {
		c.Memory, c.MemorySource = int64(min(n, 1<<62)), "cgroup"
		return c, nil
	}
	n, err := memlimit.FromSystem()
	if err != nil || n == 0 {
		return c, errors.Join(errors.New("cannot tell the machine's memory"), err)
	}
	c.Memory, c.MemorySource = int64(min(n, 1<<62)), "system"
	return c, nil
}

// Concurrency is the in-flight limit c can hold, and why: as many pings as
// its memory holds at PingMemory each, after BaseMemory, from all of a
// limit set for the process and a quarter of the machine's RAM, between
// MinAutoConcurrency and MaxAutoConcurrency; with the probing engine (a
// socket per ping) no more than its open-file limit allows.
func (c Capacity) Concurrency(socketPerPing bool) (int, string) {
	budget := c.Memory
	if c.MemorySource == "system" {
		budget /= 4
	}
	n := int64(MaxAutoConcurrency)
	why := fmt.Sprintf("the most by default (%s memory: %d MiB)", c.MemorySource, c.Memory>>20)
	if byMem := (budget - BaseMemory) / PingMemory; byMem < n {
		n = max(byMem, MinAutoConcurrency)
		why = fmt.Sprintf("what %d MiB of memory (%s) holds at %d KiB per ping", budget>>20, c.MemorySource, PingMemory>>10)
	}
	if socketPerPing && c.Files > 0 {
		if byFiles := int64(c.Files) - socketReserve; byFiles < n {
			n = max(byFiles, 1)
			why = fmt.Sprintf("the open-file limit (%d), one socket per ping", c.Files)
		}
	}
	return int(n), why
}

// AutoConcurrency is the in-flight limit of a worker given none: what this
// process may hold (MachineCapacity with its Go memory limit, if one is
// set), and why. On error it is MinAutoConcurrency.
func AutoConcurrency(socketPerPing bool) (int, string) {
	var limit int64
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		limit = l
	}
	c, err := MachineCapacity(limit)
	if err != nil {
		return MinAutoConcurrency, "the least, for want of the memory size: " + err.Error()
	}
	return c.Concurrency(socketPerPing)
}
