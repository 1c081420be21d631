package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/api"
	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/tasks"
)

// as returns the header of a request with bearer token tok.
func as(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// hostsJSON returns a request body of n hosts of 127.0.<b>.0/24.
func hostsJSON(b, n int) string {
	h := make([]string, n)
	for i := range h {
		h[i] = `"127.0.` + strconv.Itoa(b) + `.` + strconv.Itoa(i+1) + `"`
	}
	return `{"hosts": [` + strings.Join(h, ",") + `]}`
}

// A tenant's tokens see its own batches only (another's is not found, and
// not listed), an operator's all of them; a batch carries its tenant, in
// its summary and in its lane (with the tenant's rate); idempotency keys
// are the tenant's own.
func TestTenantsSeeTheirOwn(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *api.Config) {
		c.Tenants = []api.Tenant{{Name: "a", Tokens: []string{"ta"}, Quota: api.Quota{Rate: 500}}, {Name: "b", Tokens: []string{"tb", "tb2"}}}
	})
	a1 := e.create(hostsJSON(1, 3), as("ta")...)
	b1 := e.create(hostsJSON(2, 1), as("tb2")...)
	for _, c := range []struct {
		method, path, tok string
		want              int
	}{
		{"GET", "/v1/batches/" + a1.ID, "tb", 404},
		{"GET", "/v1/batches/" + a1.ID + "/results", "tb", 404},
		{"GET", "/v1/batches/" + a1.ID + "/events", "tb", 404},
		{"DELETE", "/v1/batches/" + a1.ID, "tb", 404},
		{"GET", "/v1/batches/nosuch", "tb", 404},
		{"GET", "/v1/batches/" + a1.ID, "ta", 200},
		{"GET", "/v1/batches/" + b1.ID, "tb", 200},
		{"GET", "/v1/batches/" + a1.ID, token, 200},
		{"GET", "/v1/batches/" + a1.ID, "nobody", 401},
	} {
		code, body := e.do(c.method, c.path, "", as(c.tok)...)
		if code != c.want {
			t.Errorf("%s %s as %s: %d %s; want %d", c.method, c.path, c.tok, code, body, c.want)
		}
		if c.want == 404 && !strings.Contains(body, "not found") {
			t.Errorf("%s %s as %s: %s; want the answer of a batch that does not exist", c.method, c.path, c.tok, body)
		}
	}
	if _, body := e.do("GET", "/v1/batches/"+a1.ID, "", as("ta")...); !strings.Contains(body, `"tenant": "a"`) {
		t.Errorf("summary of a tenant's batch: %s; want its tenant", body)
	}
	listed := func(tok string) map[string]bool {
		_, body := e.do("GET", "/v1/batches", "", as(tok)...)
		var l struct{ Batches []struct{ ID string } }
		if err := json.Unmarshal([]byte(body), &l); err != nil {
			t.Fatal(err, body)
		}
		m := map[string]bool{}
		for _, b := range l.Batches {
			m[b.ID] = true
		}
		return m
	}
	if l := listed("tb"); !l[b1.ID] || l[a1.ID] {
		t.Errorf("tenant b lists %v; want its batch %s only", l, b1.ID)
	}
	if l := listed(token); !l[b1.ID] || !l[a1.ID] {
		t.Errorf("an operator lists %v; want both batches", l)
	}
	lanes, _, err := tasks.ReadLanes(context.Background(), e.rdb)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lanes {
		if l.Batch == a1.ID && (l.Tenant != "a" || l.TenantRate != 500) || l.Batch == b1.ID && (l.Tenant != "b" || l.TenantRate != 0) {
			t.Errorf("lane %+v; want tenant a with rate 500 for %s, b without for %s", l, a1.ID, b1.ID)
		}
	}
	ka := e.create(hostsJSON(3, 1), append(as("ta"), "Idempotency-Key", "k1")...)
	kb := e.create(hostsJSON(3, 1), append(as("tb"), "Idempotency-Key", "k1")...)
	if ka.ID == kb.ID || kb.Existing {
		t.Errorf("one Idempotency-Key from two tenants: %+v and %+v; want two batches", ka, kb)
	}
}

// A tenant's quota of open batches and of hosts not done: a batch past it
// is refused with 429 and a Retry-After, nothing created; one larger than
// the hosts quota alone with 422; a batch that ends gives its place back.
func TestTenantQuota(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *api.Config) {
		c.Tenants = []api.Tenant{{Name: "a", Tokens: []string{"ta"}, Quota: api.Quota{Batches: 2}}, {Name: "h", Tokens: []string{"th"}, Quota: api.Quota{Hosts: 10}}}
	})
	refused := func(tok, body string, code int, want string) {
		t.Helper()
		before := e.rdb.DBSize(context.Background()).Val()
		req, _ := http.NewRequest(http.MethodPost, e.http.URL+"/v1/batches", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var er api.Error
		_ = json.NewDecoder(resp.Body).Decode(&er)
		resp.Body.Close()
		if resp.StatusCode != code || !strings.Contains(er.Error+" "+detailsOf(er), want) {
			t.Errorf("POST as %s: %d %+v; want %d and %q", tok, resp.StatusCode, er, code, want)
		}
		if code == 429 {
			ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil || ra < 1 || ra > 3600 {
				t.Errorf("429 with Retry-After %q; want whole seconds from 1 to 3600", resp.Header.Get("Retry-After"))
			}
		}
		if after := e.rdb.DBSize(context.Background()).Val(); after != before {
			t.Errorf("a refused batch changed the keys in Redis: %d then %d", before, after)
		}
	}
	a1 := e.create(hostsJSON(1, 2), as("ta")...)
	e.create(hostsJSON(2, 2), as("ta")...)
	refused("ta", hostsJSON(3, 1), 429, "tenant a has 2 batches open, its most")
	e.create(hostsJSON(3, 1), as(token)...) // an operator has no quota
	if code, body := e.do("DELETE", "/v1/batches/"+a1.ID, "", as("ta")...); code != 200 {
		t.Fatalf("cancel: %d %s", code, body)
	}
	e.create(hostsJSON(3, 1), as("ta")...) // the cancelled batch's place

	refused("th", hostsJSON(4, 11), 422, "more hosts than tenant h may have in flight (10)")
	e.create(hostsJSON(4, 6), as("th")...)
	refused("th", hostsJSON(5, 5), 429, "tenant h has 6 hosts of open batches not done, and 5 more would pass its most of 10")
	e.create(hostsJSON(5, 4), as("th")...)
}

func detailsOf(e api.Error) string {
	var b strings.Builder
	for _, d := range e.Details {
		b.WriteString(d.Field + ": " + d.Reason + "; ")
	}
	return b.String()
}

// Hosts done give their place back: once a worker pings a tenant's batch,
// a batch refused before is admitted, and Retry-After follows the pace of
// the tenant's open batches.
func TestTenantQuotaFreedAsHostsAreDone(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *api.Config) {
		c.Tenants = []api.Tenant{{Name: "h", Tokens: []string{"th"}, Quota: api.Quota{Hosts: 100}}}
	})
	e.startWorker(&pingLog{delay: 20 * time.Millisecond}, 10, "") // 500 hosts a second
	first := e.create(hostsJSON(1, 100), as("th")...)
	testkit.Eventually(t, 10*time.Second, func() bool {
		s, err := e.agg.Progress(context.Background(), first.ID)
		return err == nil && s.Done >= 10
	}, "the first batch under way") // a pace to go by
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodPost, e.http.URL+"/v1/batches", strings.NewReader(hostsJSON(2, 50)))
		req.Header.Set("Authorization", "Bearer th")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusAccepted {
			break
		}
		if resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("POST while the first batch runs: %d; want 429 then 202", resp.StatusCode)
		}
		if ra := resp.Header.Get("Retry-After"); ra != "1" {
			t.Errorf("Retry-After %s with 50 hosts to wait for at about 500 a second; want 1", ra)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s, err := e.agg.Progress(context.Background(), first.ID); err != nil || s.Total-s.Done > 50 {
		t.Errorf("admitted with %d of the first batch's hosts not done (%v); want at most 50", s.Total-s.Done, err)
	}
}

// The tenants file: names, tokens and quotas; its mistakes name the line.
func TestParseTenants(t *testing.T) {
	got, err := api.ParseTenants(strings.NewReader("# name tokens quota\n\ndeploys  tok-a1,tok-a2  batches=20 hosts=5000\nnightly tok-n rate=20000\n"))
	if err != nil || len(got) != 2 || got[0].Name != "deploys" || len(got[0].Tokens) != 2 || got[0].Quota != (api.Quota{Batches: 20, Hosts: 5000}) || got[1].Quota.Rate != 20000 {
		t.Fatalf("ParseTenants: %+v, %v", got, err)
	}
	for in, want := range map[string]string{
		"a\n":                    "tenants line 1: want a name, its tokens",
		"x\na/b tok\n":           "tenants line 1: want",
		"ok t1\nbad/name t2\n":   `tenants line 2: tenant "bad/name"`,
		"a t1\na t2\n":           "tenants line 2: tenant a named twice",
		"a t1\nb t1\n":           "tenants line 2: tenant b: an empty or repeated token",
		"a t1 batches=0\n":       "tenants line 1: tenant a: batches must be a whole number above 0",
		"a t1 colour=red\n":      `tenants line 1: tenant a: "colour=red" is not batches=N`,
		"a t1,,t2\n":             "tenants line 1: tenant a: an empty or repeated token",
		"a t1 hosts=lots\n":      "tenants line 1: tenant a: hosts must be",
		"# only a comment\n  \n": "",
	} {
		_, err := api.ParseTenants(strings.NewReader(in))
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("ParseTenants(%q): %v; want %q", in, err, want)
		}
	}
}
