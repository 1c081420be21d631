//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/pingfleet/pingfleet/internal/testkit"
)

// Scenario 12: fair sharing, with serve's and one worker's defaults.
// (a) A 10-host -c 2 batch, 20 times one after the other: alone, then
// while a big -c 2 sweep runs; its wait (submission to first ping) and
// time to its end. (b) Two equal batches submitted together: how far
// apart they end. With -baseline, for that build first.
func (b *bench) fairSharing() error {
	bins := [][2]string{{"this build", b.bin}}
	if b.opts.baseline != "" {
		bins = append([][2]string{{"baseline", b.opts.baseline}}, bins...)
	}
	sweep, smalls, pair := b.size(100000, 5000), b.size(20, 5), b.size(20000, 2000)
	fmt.Printf("## 12. Fair sharing (serve and one worker, defaults only)\n\n")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, "build\t10-host -c 2 batch\truns\twait p50 ms\tp95 ms\tcomplete p50 ms\tp95 ms\tmax ms")
	var notes []string
	for _, bin := range bins {
		f, err := b.fairRun(bin[1], sweep, smalls, pair)
		if err != nil {
			return fmt.Errorf("%s: %w", bin[0], err)
		}
		for _, r := range []struct {
			what string
			runs []smallRun
		}{{"alone, one after the other", f.alone}, {fmt.Sprintf("one every %s while a %d-host -c 2 batch runs", smallEvery, f.sweep.Total), f.beside}} {
			wait, done := durations(r.runs, func(s smallRun) time.Duration { return s.wait }), durations(r.runs, func(s smallRun) time.Duration { return s.done })
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", bin[0], r.what, len(r.runs), ms(pct(wait, 50)), ms(pct(wait, 95)), ms(pct(done, 50)), ms(pct(done, 95)), ms(done[len(done)-1]))
		}
		d0, d1 := f.pair[0].DurationSec, f.pair[1].DurationSec
		alone, aloneMed := secs(f.freeAlone)
		beside, besideMed := secs(f.freeBeside)
		notes = append(notes, fmt.Sprintf("%s: the sweep took %.1f s; two batches of %d hosts (-c 2) submitted together were done in %.2f s and %.2f s, %.1f %% apart; a %d-host -c 2 batch, alone and then 1 s after a %d-host batch limited to 500 pings/s, alternated %d times, took %s s alone and %s s beside it (medians %.2f and %.2f s, %+.1f %%)",
			bin[0], f.sweep.DurationSec, f.pair[0].Total, d0, d1, 100*math.Abs(d0-d1)/max(d0, d1),
			f.freeAlone[0].Total, f.pair[0].Total, len(f.freeAlone), alone, beside, aloneMed, besideMed, 100*(besideMed/aloneMed-1)))
	}
	_ = tw.Flush()
	fmt.Printf("\n(wait: from submission to the first ping, the summary's wait_s; complete: to the end, as the client saw it)\n\n%s\n\n", strings.Join(notes, "\n"))
	return nil
}

type fairRun struct {
	alone, beside []smallRun
	sweep         batchState
	pair          [2]batchState
	// (c): an unlimited batch alone, then submitted just after a big batch
	// limited to a rate far below the fleet's capacity.
	freeAlone, freeBeside []batchState
}

// freeRounds is how many times (c) alternates.
const freeRounds = 3

// cancelBatch cancels batch id.
func cancelBatch(api, id string) error {
	req, err := http.NewRequest(http.MethodDelete, api+"/v1/batches/"+id, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// secs lists the durations of batches, and returns their median.
func secs(bs []batchState) (string, float64) {
	d := make([]string, len(bs))
	v := make([]float64, len(bs))
	for i, b := range bs {
		d[i], v[i] = fmt.Sprintf("%.2f", b.DurationSec), b.DurationSec
	}
	slices.Sort(v)
	return strings.Join(d, " / "), v[len(v)/2]
}

// fairRun measures scenario 12 on pingfleet binary bin: its serve and a
// worker on b's Redis, both with their defaults.
func (b *bench) fairRun(bin string, sweep, smalls, pair int) (fairRun, error) {
	var f fairRun
	if err := b.flush(); err != nil {
		return f, err
	}
	port, err := testkit.FreePort()
	if err != nil {
		return f, err
	}
	api := "http://127.0.0.1:" + strconv.Itoa(port)
	serve, err := start(bin, []string{"serve", "--redis", b.url, "--addr", "127.0.0.1:" + strconv.Itoa(port)})
	if err != nil {
		return f, err
	}
	defer serve.stop()
	w, err := start(bin, []string{"worker", "--redis", b.url})
	if err != nil {
		return f, err
	}
	defer w.stop()
	if err := waitListening("127.0.0.1:" + strconv.Itoa(port)); err != nil {
		return f, err
	}
	time.Sleep(500 * time.Millisecond) // the worker polls
	small := func(i int) string {
		return fmt.Sprintf(`{"hosts": ["127.0.%d.1-10"], "options": {"count": 2}}`, 200+i%50)
	}
	// Each small batch (10 hosts, 1 s) alone, one after the other.
	for i := range smalls {
		began := time.Now()
		id, err := postBatch(api, small(i))
		if err != nil {
			return f, err
		}
		s, err := waitBatch(api, id, func(s batchState) bool { return s.State == "complete" }, time.Minute)
		if err != nil {
			return f, err
		}
		f.alone = append(f.alone, smallRun{wait: time.Duration(s.WaitSec * float64(time.Second)), done: time.Since(began)})
	}
	// The sweep: -c 2 over 127.1.0.0 on.
	hosts, next := slash24s(256, sweep)
	sweepID, err := postBatch(api, `{"hosts": `+hosts+`, "options": {"count": 2}}`)
	if err != nil {
		return f, err
	}
	if _, err := waitBatch(api, sweepID, func(s batchState) bool { return s.Done >= min(2000, sweep/10) }, 10*time.Minute); err != nil {
		return f, err
	}
	if f.beside, err = smallRuns(api, smalls, small); err != nil {
		return f, err
	}
	if f.sweep, err = waitBatch(api, sweepID, func(s batchState) bool { return s.State != "running" && s.State != "enqueuing" }, 30*time.Minute); err != nil {
		return f, err
	}
	var ids [2]string
	for i := range ids {
		var hosts string
		hosts, next = slash24s(next, pair)
		if ids[i], err = postBatch(api, `{"hosts": `+hosts+`, "options": {"count": 2}}`); err != nil {
			return f, err
		}
	}
	for i, id := range ids {
		if f.pair[i], err = waitBatch(api, id, func(s batchState) bool { return s.State == "complete" }, 30*time.Minute); err != nil {
			return f, err
		}
	}
	// (c) The unlimited batch alone, then behind a rate-limited one,
	// alternated: a 10k-host -c 2 batch takes either about 2 s or 3 s
	// alone, whether or not its last tasks are fetched before its first
	// results come back (bench/README.md), so one pair would compare
	// chance.
	free, next := slash24s(next, pair/2)
	limited, _ := slash24s(next, pair)
	for range freeRounds {
		alone, err := b.batchDone(api, `{"hosts": `+free+`, "options": {"count": 2}}`)
		if err != nil {
			return f, err
		}
		limitedID, err := postBatch(api, `{"hosts": `+limited+`, "options": {"count": 2, "batch_rate": 500}}`)
		if err != nil {
			return f, err
		}
		time.Sleep(time.Second) // the limited batch fills what it holds
		beside, err := b.batchDone(api, `{"hosts": `+free+`, "options": {"count": 2}}`)
		if err != nil {
			return f, err
		}
		f.freeAlone, f.freeBeside = append(f.freeAlone, alone), append(f.freeBeside, beside)
		// The limited batch would take a minute more: cancel it.
		if err := cancelBatch(api, limitedID); err != nil {
			return f, err
		}
	}
	return f, nil
}

// batchDone submits body and waits for the batch to complete.
func (b *bench) batchDone(api, body string) (batchState, error) {
	id, err := postBatch(api, body)
	if err != nil {
		return batchState{}, err
	}
	return waitBatch(api, id, func(s batchState) bool { return s.State == "complete" }, 30*time.Minute)
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

type smallRun struct{ wait, done time.Duration }

// smallRuns submits n batches body(i), one every smallEvery (each
// without waiting for the one before, so that all of them meet the same
// sweep), and times each from its submission to its end; its wait is the
// summary's.
func smallRuns(api string, n int, body func(int) string) ([]smallRun, error) {
	runs := make([]smallRun, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		if i > 0 {
			time.Sleep(smallEvery)
		}
		wg.Go(func() {
			began := time.Now()
			id, err := postBatch(api, body(i))
			if err != nil {
				errs[i] = err
				return
			}
			s, err := waitBatch(api, id, func(s batchState) bool { return s.State == "complete" }, time.Minute)
			runs[i], errs[i] = smallRun{wait: time.Duration(s.WaitSec * float64(time.Second)), done: time.Since(began)}, err
		})
	}
	wg.Wait()
	return runs, errors.Join(errs...)
}

// smallEvery spaces the small batches of scenario 12.
const smallEvery = 300 * time.Millisecond

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
