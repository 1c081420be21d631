package worker

import (
	"strconv"
	"strings"
	"testing"
)

func TestCapacityConcurrency(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	for _, tc := range []struct {
		desc    string
		c       Capacity
		probing bool
		want    int
		why     string
	}{
		{"a large machine", Capacity{Memory: 24 << 30, MemorySource: "system", Files: 1 << 20}, false, MaxAutoConcurrency, "the most"},
		{"a quarter of a small machine's RAM", Capacity{Memory: 1 << 30, MemorySource: "system"}, false, (256*mib - BaseMemory) / PingMemory, "256 MiB of memory (system)"},
		{"a container's limit, all of it", Capacity{Memory: 200 * mib, MemorySource: "cgroup"}, false, (200*mib - BaseMemory) / PingMemory, "200 MiB of memory (cgroup)"},
		{"GOMEMLIMIT", Capacity{Memory: 100 * mib, MemorySource: "GOMEMLIMIT"}, false, (100*mib - BaseMemory) / PingMemory, "(GOMEMLIMIT)"},
		{"less than the base", Capacity{Memory: 16 * mib, MemorySource: "GOMEMLIMIT"}, false, MinAutoConcurrency, "16 MiB"},
		{"the shared engine ignores the file limit", Capacity{Memory: 24 << 30, MemorySource: "system", Files: 1024}, false, MaxAutoConcurrency, "the most"},
		{"probing: a socket per ping", Capacity{Memory: 24 << 30, MemorySource: "system", Files: 1024}, true, 1024 - socketReserve, "open-file limit (1024)"},
		{"probing, memory first", Capacity{Memory: 100 * mib, MemorySource: "cgroup", Files: 1 << 20}, true, (100*mib - BaseMemory) / PingMemory, "(cgroup)"},
	} {
		n, why := tc.c.Concurrency(tc.probing)
		if n != tc.want || !strings.Contains(why, tc.why) {
			t.Errorf("%s: Concurrency = %d (%s); want %d (%s)", tc.desc, n, why, tc.want, tc.why)
		}
	}
}

func TestMachineCapacity(t *testing.T) {
	t.Parallel()
	c, err := MachineCapacity(0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Memory < 64<<20 || (c.MemorySource != "system" && c.MemorySource != "cgroup") {
		t.Errorf("MachineCapacity(0) = %+v; want this machine's memory", c)
	}
	if c, _ := MachineCapacity(123 << 20); c.Memory != 123<<20 || c.MemorySource != "GOMEMLIMIT" {
		t.Errorf("MachineCapacity(123 MiB) = %+v; want GOMEMLIMIT's", c)
	}
}

func TestServerQueues(t *testing.T) {
	t.Parallel()
	got := serverQueues(2, 4, true)
	want := map[string]int{"pingfleet-2": 4, "pingfleet-3": 3, "pingfleet-0": 2, "pingfleet-1": 1, "pingfleet-callbacks": 5}
	if len(got) != len(want) {
		t.Fatalf("serverQueues(2, 4, true) = %v; want %v", got, want)
	}
	for q, p := range want {
		if got[q] != p {
			t.Errorf("serverQueues(2, 4, true)[%s] = %d; want %d (all: %v)", q, got[q], p, got)
		}
	}
	// Every server starts at a queue of its own.
	for i := range 8 {
		for q, p := range serverQueues(i, 8, false) {
			if p == 8 && q != "pingfleet-"+strconv.Itoa(i) {
				t.Errorf("server %d starts at %s", i, q)
			}
		}
	}
}
