package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
)

// post submits body as the holder of tok and returns the status, the
// Retry-After header and the body.
func post(t *testing.T, url, tok, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/v1/batches", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

// summaryAs reads a batch's summary as the holder of tok (status 404: nil).
func summaryAs(t *testing.T, url, tok, id string) *aggregator.Summary {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url+"/v1/batches/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	var s aggregator.Summary
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// The built binary, with defaults but a worker of 50 slots: a tenant's
// 10-host batch submitted while another tenant's 2,000-host sweep keeps
// every slot busy completes at once, beside the sweep, not after it; the
// tenant's quota of one open batch refuses its second with 429 and a
// Retry-After; neither tenant sees the other's batch.
func TestE2EFairBetweenTenants(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	tenants := filepath.Join(t.TempDir(), "tenants")
	if err := os.WriteFile(tenants, []byte("# name tokens quota\nnightly tok-n\ndeploys tok-d batches=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := startServe(t, srv.URL(), "--tenants", tenants)
	startWorker(t, srv.URL(), "--concurrency", "50")

	hosts := func(n, base int) string {
		h := strings.Fields(loopbackHosts(n, base))
		return `"` + strings.Join(h, `","`) + `"`
	}
	// 2,000 hosts of 2 requests 200 ms apart on 50 slots: about 8 s.
	code, _, body := post(t, url, "tok-n", `{"hosts": [`+hosts(2000, 20)+`], "options": {"count": 2, "interval": "200ms"}}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST the sweep: %d %s", code, body)
	}
	var sweep struct{ ID string }
	_ = json.Unmarshal([]byte(body), &sweep)
	testkit.Eventually(t, 20*time.Second, func() bool {
		s := summaryAs(t, url, "tok-n", sweep.ID)
		return s != nil && s.Done >= 100
	}, "the sweep under way")

	submitted := time.Now()
	code, _, body = post(t, url, "tok-d", `{"hosts": [`+hosts(10, 40)+`], "options": {"count": 1}}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST the deploy check: %d %s", code, body)
	}
	var deploy struct{ ID string }
	_ = json.Unmarshal([]byte(body), &deploy)
	code, retry, body := post(t, url, "tok-d", `{"hosts": ["127.0.0.1"]}`)
	if n, _ := strconv.Atoi(retry); code != http.StatusTooManyRequests || n < 1 || !strings.Contains(body, "tenant deploys has 1 batches open, its most") {
		t.Errorf("a second batch of a tenant with a quota of one: %d, Retry-After %q, %s; want 429 and a Retry-After", code, retry, body)
	}
	if summaryAs(t, url, "tok-d", sweep.ID) != nil || summaryAs(t, url, "tok-n", deploy.ID) != nil {
		t.Error("a tenant sees the other's batch; want 404")
	}
	var took time.Duration
	testkit.Eventually(t, 20*time.Second, func() bool {
		s := summaryAs(t, url, "tok-d", deploy.ID)
		took = time.Since(submitted)
		return s != nil && s.Completed()
	}, "the deploy check complete")
	d := summaryAs(t, url, "tok-d", deploy.ID)
	s := summaryAs(t, url, "tok-n", sweep.ID)
	if s.Completed() || took > 3*time.Second || d.Up != 10 {
		t.Errorf("the 10-host batch: %d up in %v (waited %.2f s), the sweep complete: %v (%d of %d done); want it done within 3 s while the sweep runs",
			d.Up, took, d.WaitSec, s.Completed(), s.Done, s.Total)
	}
	if d.Tenant != "deploys" || s.Tenant != "nightly" {
		t.Errorf("tenants %q and %q; want deploys and nightly", d.Tenant, s.Tenant)
	}
	t.Logf("the 10-host batch took %v (waited %.3f s) beside the sweep, %d of %d done then", took, d.WaitSec, s.Done, s.Total)
	// Its place is back once it is done.
	if code, _, body := post(t, url, "tok-d", `{"hosts": ["127.0.0.1"]}`); code != http.StatusAccepted {
		t.Errorf("a batch after the tenant's first ended: %d %s; want 202", code, body)
	}
}
