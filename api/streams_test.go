//go:build unix

package api_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/api"
	"github.com/pingfleet/pingfleet/internal/testkit"
)

// openStream starts GET .../events with bearer tok and returns its status
// and a function that closes it.
func (e *env) openStream(t *testing.T, id, tok string) (int, string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.http.URL+"/v1/batches/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // the returned function closes it
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), func() { cancel(); resp.Body.Close() }
}

// Event streams are bounded per server and per token: past a bound, 429
// with a Retry-After, and a closed stream frees its place.
func TestEventStreamBounds(t *testing.T) {
	t.Parallel()
	const other = "second-token"
	e := setup(t, func(c *api.Config) {
		c.MaxStreams, c.MaxStreamsPerToken = 3, 2
		c.Tokens = append(c.Tokens, other)
	})
	id := e.create(`{"hosts": ["127.0.0.1"]}`).ID // no worker: it stays open
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for i, tc := range []struct {
		tok   string
		code  int
		retry string
	}{
		{token, 200, ""}, {token, 200, ""}, {token, 429, "5"}, // the token's 2
		{other, 200, ""}, {other, 429, "5"}, // the server's 3
	} {
		code, retry, closeIt := e.openStream(t, id, tc.tok)
		closers = append(closers, closeIt)
		if code != tc.code || retry != tc.retry {
			t.Errorf("stream %d: %d, Retry-After %q; want %d, %q", i+1, code, retry, tc.code, tc.retry)
		}
	}
	closers[0]()
	testkit.Eventually(t, 10*time.Second, func() bool {
		code, _, closeIt := e.openStream(t, id, token)
		closers = append(closers, closeIt)
		return code == 200
	}, "a stream accepted once another closed")
}

// A client that opens an event stream and reads nothing is dropped once a
// write waits longer than the stream write timeout: it does not hold its
// place (or a goroutine and a Redis connection) forever.
func TestEventStreamDropsNonReaders(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *api.Config) {
		c.MaxStreamsPerToken = 1
		c.StreamWriteTimeout = 300 * time.Millisecond
		c.MaxHosts = 10000
	})
	// More events than the kernel's socket buffers hold (4 MiB for the
	// server's side at most here: net.ipv4.tcp_wmem).
	cr := e.create(`{"hosts": ["127.0.0.0/19"]}`)
	ctx := context.Background()
	text := strings.Repeat("a long error text, so that fewer results fill the buffers ", 10)
	for i := 1; i < 6000; i++ {
		r := aggregator.Result{Host: fmt.Sprintf("127.0.%d.%d", i/256, i%256), Status: aggregator.StatusDown, Sent: 1, LossPct: 100, Error: text}
		if _, err := e.agg.Record(ctx, cr.ID, r); err != nil {
			t.Fatal(err)
		}
	}
	// A client with the smallest receive buffer, which never reads.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(e.http.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/batches/%s/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", cr.ID, token)
	status, err := bufio.NewReader(conn).ReadString('\n') // the status line only, then nothing
	if err != nil || !strings.Contains(status, "200") {
		t.Fatalf("stream: %q, %v", status, err)
	}
	code, _, closeIt := e.openStream(t, cr.ID, token)
	closeIt()
	if code != http.StatusTooManyRequests {
		t.Fatalf("a second stream while the first is held: %d; want 429", code)
	}
	began := time.Now()
	testkit.Eventually(t, 20*time.Second, func() bool {
		code, _, closeIt := e.openStream(t, cr.ID, token)
		closeIt()
		return code == 200
	}, "the non-reading client dropped")
	t.Logf("non-reading client dropped within %s", time.Since(began).Round(10*time.Millisecond))
}

// Many clients following one running batch share one reader of its events
// (a hub); each still sees every result exactly once, then the end,
// whether it stays, reconnects now and then (rejoining the hub or reading
// on its own from further back), or joins late.
func TestEventStreamsShared(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	cr := e.create(`{"hosts": ["127.0.5.1-200"]}`)
	e.startWorker(&pingLog{delay: 20 * time.Millisecond}, 8, "")
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			if i%3 == 2 {
				time.Sleep(time.Duration(i) * 20 * time.Millisecond) // late
			}
			drop := []int{0, 17, 0}[i%3] // 0: never
			seen, complete := e.readSSE(t, cr.ID, "", drop)
			checkSeenOnce(t, seen, complete, 200)
		})
	}
	wg.Wait()
}
