package notify_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/notify"
	"github.com/pingfleet/pingfleet/tasks"
)

// loopbackCallbacks lets callbacks reach the tests' receivers, on
// loopback, which the default policy refuses.
var loopbackCallbacks = notify.CallbackPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

func TestCallbackPolicy(t *testing.T) {
	t.Parallel()
	var open notify.CallbackPolicy
	for _, tc := range []struct {
		url    string
		policy notify.CallbackPolicy
		reason string // "" if allowed
	}{
		{"http://127.0.0.1:6379/", open, "is loopback"},
		{"http://127.9.9.9/", open, "is loopback"},
		{"http://[::1]:8080/hook", open, "is loopback"},
		{"http://[::ffff:127.0.0.1]/", open, "is loopback"},
		{"http://localhost:9000/", open, "is loopback"},
		{"http://db.localhost./", open, "is loopback"},
		{"http://169.254.169.254/latest/meta-data/", open, "link-local"},
		{"http://[fd00:ec2::254]/", open, "private"},
		{"http://[fe80::1%25eth0]/", open, "link-local"},
		{"http://10.1.2.3/", open, "private"},
		{"http://172.20.0.1/", open, "private"},
		{"http://192.168.1.1/", open, "private"},
		{"http://100.100.100.200/", open, "shared"},
		{"http://224.0.0.1/", open, "multicast"},
		{"http://0.0.0.0:80/", open, "unspecified"},
		{"http://[::]/", open, "unspecified"},
		{"http:///path", open, "has no host"},
		{"ftp://example.com/", open, "http"},
		{"https://hooks.example.com/ping", open, ""}, // a name: checked where it leads, at delivery
		{"https://203.0.113.7/hook", open, ""},
		{"http://[2001:db8::1]/", open, ""},
		{"http://127.0.0.1:6379/", loopbackCallbacks, ""},
		{"http://10.1.2.3/", notify.CallbackPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, ""},
		{"http://10.2.0.1/", notify.CallbackPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}, "private"},
	} {
		err := tc.policy.CheckURL(tc.url)
		switch {
		case tc.reason == "" && err != nil:
			t.Errorf("CheckURL(%q) = %v; want allowed", tc.url, err)
		case tc.reason != "" && (err == nil || !strings.Contains(err.Error(), tc.reason)):
			t.Errorf("CheckURL(%q) = %v; want refused: %s", tc.url, err, tc.reason)
		}
	}
}

// The callback client checks where it actually connects, after DNS: a
// name that leads to loopback is refused without a byte sent, and
// redirects are answers, not followed.
func TestCallbackClientChecksWhatItDials(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	rs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rs.Close()
	port := rs.URL[strings.LastIndex(rs.URL, ":")+1:]
	c := notify.NewCallbackClient(notify.CallbackPolicy{})
	for _, u := range []string{rs.URL, "http://localhost:" + port + "/"} { // localhost: /etc/hosts, no DNS server
		resp, err := c.Post(u, "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
		}
		if !errors.Is(err, notify.ErrCallbackDenied) {
			t.Errorf("POST %s: %v; want refused", u, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the receiver got %d requests; want none", n)
	}
	resp, err := notify.NewCallbackClient(loopbackCallbacks).Post(rs.URL+"/moved", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits.Load() != 1 {
		t.Errorf("redirect: %d after %d requests; want the 302 itself, one request", resp.StatusCode, hits.Load())
	}
}

// A batch whose callback leads somewhere refused is not retried, and
// nothing is sent there.
func TestSenderRefusesInternalTargets(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	agg, err := aggregator.New(aggregator.Config{Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, u := range []string{"http://" + srv.Addr + "/", "http://localhost:" + srv.Addr[strings.LastIndex(srv.Addr, ":")+1:] + "/"} {
		id := "cb-" + strings.NewReplacer(":", "-", "/", "-", ".", "-").Replace(u)
		if _, err := agg.Create(ctx, aggregator.Batch{ID: id, Hosts: []string{"127.0.0.1"}, CallbackURL: u}); err != nil {
			t.Fatal(err)
		}
		s, err := notify.NewSender(notify.SenderConfig{Aggregator: agg})
		if err != nil {
			t.Fatal(err)
		}
		task, err := tasks.NewCallbackTask(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.ProcessTask(ctx, task); !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, notify.ErrCallbackDenied) {
			t.Errorf("callback to %s (Redis): %v; want refused, not retried", u, err)
		}
	}
}
