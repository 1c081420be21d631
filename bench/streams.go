//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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

// Scenario 10: how the API answers submissions while many clients follow
// a running batch's event stream, with serve's defaults: POST latency with
// no stream, then with N of them, in the same run.
func (b *bench) streamsLoad() error {
	if err := b.flush(); err != nil {
		return err
	}
	clients, posts := b.size(300, 20), b.size(200, 20)
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
	// A batch that runs for the whole scenario, its results coming all
	// the time: 400 hosts a second.
	followed, err := postBatch(api, `{"hosts": ["127.0.48.0/20"], "options": {"count": 1, "batch_rate": 400}}`)
	if err != nil {
		return err
	}
	var rows [][]string
	row := func(n int) error {
		lat, err := postLatencies(api, posts)
		if err != nil {
			return err
		}
		rows = append(rows, []string{strconv.Itoa(n), ms(pct(lat, 50)), ms(pct(lat, 99)), ms(lat[len(lat)-1])})
		return nil
	}
	if err := row(0); err != nil {
		return err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	opened, events := 0, 0
	for range clients {
		wg.Go(func() {
			resp, err := http.Get(api + "/v1/batches/" + followed + "/events") //nolint:bodyclose // closed below, or on stop
			if err != nil {
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return
			}
			mu.Lock()
			opened++
			mu.Unlock()
			go func() { <-stop; resp.Body.Close() }()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if bytes.HasPrefix(sc.Bytes(), []byte("event: result")) {
					mu.Lock()
					events++
					mu.Unlock()
				}
			}
		})
	}
	time.Sleep(2 * time.Second) // every client connected and reading
	err = row(clients)
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	if opened < clients {
		return fmt.Errorf("%d of %d event streams opened", opened, clients)
	}
	printLatencies(fmt.Sprintf("10. POST /v1/batches while clients follow a running batch's events (serve and worker defaults, %d sequential POSTs of one host each)", posts),
		"event-stream clients\tPOST p50 ms", rows, fmt.Sprintf("%d result events reached the clients meanwhile", events))
	return nil
}

// printLatencies prints a scenario's table of latencies: first the
// column of what varies and the p50's, then the p99 and the max.
func printLatencies(title, first string, rows [][]string, note string) {
	fmt.Printf("## %s\n\n", title)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 1, ' ', tabwriter.Debug)
	fmt.Fprintln(tw, first+"\tp99 ms\tmax ms")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush()
	fmt.Printf("\n(%s)\n\n", note)
}

func waitListening(addr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("serve not listening on %s: %w", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func postBatch(api, body string) (string, error) {
	resp, err := http.Post(api+"/v1/batches", "application/json", bytes.NewReader([]byte(body)))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(b, &v) != nil {
		return "", fmt.Errorf("POST: %s %s", resp.Status, b)
	}
	return v.ID, nil
}

// postLatencies submits n one-host batches one after the other and returns
// their latencies, sorted.
func postLatencies(api string, n int) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	for range n {
		began := time.Now()
		if _, err := postBatch(api, `{"hosts": ["127.0.0.1"], "options": {"count": 1}}`); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(began))
	}
	slices.Sort(lat)
	return lat, nil
}

// pct is the nearest-rank p-th percentile of sorted.
func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(i-1, 0)]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64)
}

// Scenario 11: /healthz while 1,000 clients hold connections to serve,
// half sending a request body a byte at a time, half idle after a
// request (serve's defaults), against none, in the same run.
func (b *bench) heldConnections() error {
	held := b.size(1000, 50)
	probes := b.size(200, 20)
	port, err := testkit.FreePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	serve, err := start(b.bin, []string{"serve", "--redis", b.url, "--addr", addr})
	if err != nil {
		return err
	}
	defer serve.stop()
	if err := waitListening(addr); err != nil {
		return err
	}
	var rows [][]string
	probe := func(n int) error {
		lat := make([]time.Duration, 0, probes)
		for range probes {
			began := time.Now()
			c, err := net.Dial("tcp", addr) // a new connection each: accept is what a flood holds up
			if err != nil {
				return err
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			status, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err != nil || !bytes.Contains([]byte(status), []byte(" 200 ")) {
				return fmt.Errorf("healthz with %d connections held: %q, %w", n, status, err)
			}
			lat = append(lat, time.Since(began))
		}
		slices.Sort(lat)
		rows = append(rows, []string{strconv.Itoa(n), ms(pct(lat, 50)), ms(pct(lat, 99)), ms(lat[len(lat)-1])})
		return nil
	}
	if err := probe(0); err != nil {
		return err
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range held {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, c)
		if i%2 == 0 { // a body promised, one byte sent
			fmt.Fprintf(c, "POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
			continue
		}
		// One request, then idle on a keep-alive connection.
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
	}
	opened := time.Now()
	if err := probe(held); err != nil {
		return err
	}
	// The slow bodies are cut off at the read timeout (30 s), the idle ones
	// at the idle timeout (2 min): the full run waits for both.
	closedIn := "not checked with -smoke"
	if !b.opts.smoke {
		closed := 0
		for i := 0; i < len(conns); i += 2 {
			_ = conns[i].SetReadDeadline(opened.Add(40 * time.Second))
			if _, err := io.ReadAll(conns[i]); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
				closed++
			}
		}
		slowIn := time.Since(opened)
		idle := 0
		for i := 1; i < len(conns); i += 2 {
			_ = conns[i].SetReadDeadline(opened.Add(2*time.Minute + 15*time.Second))
			if _, err := io.ReadAll(conns[i]); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
				idle++
			}
		}
		closedIn = fmt.Sprintf("closed by serve: %d of %d slow-body connections within %.1f s of the last one's opening, %d of %d idle ones within %.1f s",
			closed, (len(conns)+1)/2, slowIn.Seconds(), idle, len(conns)/2, time.Since(opened).Seconds())
	}
	printLatencies(fmt.Sprintf("11. GET /healthz on a new connection while clients hold connections to serve (defaults: --max-connections from the open-file limit, --read-timeout 30s, --idle-timeout 2m; %d probes)", probes),
		"connections held (half slow bodies, half idle)\thealthz p50 ms", rows, closedIn)
	return nil
}
