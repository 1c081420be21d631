//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pingfleet/pingfleet/internal/testkit"
)

// Scenario 12: fair sharing, with serve's and one worker's defaults.
// (a) A 10-host -c 2 batch, 20 times one after the other: alone, then
// while a big -c 2 sweep runs; time from submission to its first result
// and to its end. (b) Two equal batches submitted together: how far
// apart they end.
func (b *bench) fairSharing() error {
	if err := b.flush(); err != nil {
		return err
	}
	sweep, smalls := b.size(100000, 5000), b.size(20, 5)
	port, err := testkit.FreePort()
	if err != nil {
		return err
	}
	api := "http://127.0.0.1:" + strconv.Itoa(port)
	serve, err := start(b.bin, []string{"serve", "--redis", b.url, "--addr", "127.0.0.1:" + strconv.Itoa(port)})
	if err != nil {
		return err
	}
	defer serve.stop()
	w, err := start(b.bin, []string{"worker", "--redis", b.url})
	if err != nil {
		return err
	}
	defer w.stop()
	if err := waitListening("127.0.0.1:" + strconv.Itoa(port)); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond) // the worker polls

	small := func(i int) string {
		return fmt.Sprintf(`{"hosts": ["127.0.%d.1-10"], "options": {"count": 2}}`, 200+i%50)
	}
	alone, err := smallRuns(api, smalls, small)
	if err != nil {
		return err
	}
	// The sweep: -c 2 over 127.1.0.0 on.
	hosts, next := slash24s(256, sweep)
	sweepID, err := postBatch(api, `{"hosts": `+hosts+`, "options": {"count": 2}}`)
	if err != nil {
		return err
	}
	if _, err := waitBatch(api, sweepID, func(s batchState) bool { return s.Done >= min(2000, sweep/10) }, 10*time.Minute); err != nil {
		return err
	}
	beside, err := smallRuns(api, smalls, small)
	if err != nil {
		return err
	}
	sw, err := waitBatch(api, sweepID, func(s batchState) bool { return s.State != "running" && s.State != "enqueuing" }, 30*time.Minute)
	if err != nil {
		return err
	}
	fmt.Printf("## 12. Fair sharing (serve and one worker, defaults only)\n\n")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "10-host -c 2 batch, submitted one after the other\truns\tfirst result p50 ms\tp95 ms\tcomplete p50 ms\tp95 ms\tmax ms")
	for _, r := range []struct {
		what string
		runs []smallRun
	}{{"alone", alone}, {fmt.Sprintf("while a %d-host -c 2 batch runs", sweep), beside}} {
		first, done := durations(r.runs, func(s smallRun) time.Duration { return s.first }), durations(r.runs, func(s smallRun) time.Duration { return s.done })
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.what, len(r.runs), ms(pct(first, 50)), ms(pct(first, 95)), ms(pct(done, 50)), ms(pct(done, 95)), ms(done[len(done)-1]))
	}
	_ = tw.Flush()
	fmt.Printf("\n(the sweep: %d hosts in %.1f s, %s, wait %.3f s)\n\n", sweep, sw.DurationSec, sw.State, sw.WaitSec)

	// (b) Two equal batches submitted together.
	pair := b.size(20000, 2000)
	var ids [2]string
	for i := range ids {
		var hosts string
		hosts, next = slash24s(next, pair)
		if ids[i], err = postBatch(api, `{"hosts": `+hosts+`, "options": {"count": 2}}`); err != nil {
			return err
		}
	}
	var ends [2]batchState
	for i, id := range ids {
		if ends[i], err = waitBatch(api, id, func(s batchState) bool { return s.State == "complete" }, 30*time.Minute); err != nil {
			return err
		}
	}
	d0, d1 := ends[0].DurationSec, ends[1].DurationSec
	fmt.Printf("two batches of %d hosts (-c 2) submitted together: done in %.2f s and %.2f s, %.1f %% apart\n\n",
		ends[0].Total, d0, d1, 100*math.Abs(d0-d1)/max(d0, d1))
	return nil
}

// slash24s returns, as a JSON list, the /24s of 127/8 from the first
// one's index (127.<i/256>.<i%256>.0/24) that hold n hosts (n/256 of
// them), and the index after the last.
func slash24s(first, n int) (string, int) {
	var q []string
	i := first
	for ; i < first+max(n/256, 1); i++ {
		q = append(q, fmt.Sprintf(`"127.%d.%d.0/24"`, i/256, i%256))
	}
	return "[" + strings.Join(q, ", ") + "]", i
}

type smallRun struct{ first, done time.Duration }

// smallRuns submits n batches body(i) one after the other, each once the
// one before has ended, and times each from its submission to its first
// result and to its end.
func smallRuns(api string, n int, body func(int) string) ([]smallRun, error) {
	var runs []smallRun
	for i := range n {
		began := time.Now()
		id, err := postBatch(api, body(i))
		if err != nil {
			return nil, err
		}
		var r smallRun
		_, err = waitBatch(api, id, func(s batchState) bool {
			if s.Done > 0 && r.first == 0 {
				r.first = time.Since(began)
			}
			return s.State == "complete"
		}, time.Minute)
		if err != nil {
			return nil, err
		}
		r.done = time.Since(began)
		runs = append(runs, r)
	}
	return runs, nil
}

type batchState struct {
	State       string  `json:"state"`
	Total       int     `json:"total"`
	Done        int     `json:"done"`
	DurationSec float64 `json:"duration_s"`
	WaitSec     float64 `json:"wait_s"`
}

// waitBatch polls batch id every 5 ms until ok holds.
func waitBatch(api, id string, ok func(batchState) bool, timeout time.Duration) (batchState, error) {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(api + "/v1/batches/" + id)
		if err != nil {
			return batchState{}, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var s batchState
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &s) != nil {
			return s, fmt.Errorf("GET batch %s: %s %s", id, resp.Status, strings.TrimSpace(string(body)))
		}
		if ok(s) {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("batch %s: %+v after %s", id, s, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func durations(runs []smallRun, f func(smallRun) time.Duration) []time.Duration {
	d := make([]time.Duration, len(runs))
	for i, r := range runs {
		d[i] = f(r)
	}
	slices.Sort(d)
	return d
}
