package api

import (
	"testing"

	"github.com/pingfleet/pingfleet/tasks"
)

// FuzzDecodeCreate feeds arbitrary bodies to the request decoder: it never
// panics, and what it accepts is a batch that could be submitted.
func FuzzDecodeCreate(f *testing.F) {
	for _, seed := range []string{
		`{"hosts": ["127.0.0.1", "10.0.0.0/30", "db.example", "10.0.1.1-5"], "options": {"count": 2, "interval": "200ms"}}`,
		`{"hosts": ["::1"], "options": {"network": "ip6", "tos": 16}, "labels": {"a": "b"}, "deadline": "10m"}`,
		`{"hosts": ["224.0.0.1"], "callback_url": "http://127.0.0.1/cb"}`,
		`{"hosts": []}`, `{}`, `[]`, `{"hosts": ["x"], "options": {"count": -1}}`,
	} {
		f.Add([]byte(seed))
	}
	s := &Server{cfg: Config{MaxHosts: 4096, MaxExpand: 1024}}
	f.Fuzz(func(t *testing.T, body []byte) {
		b, p := s.decodeCreate(body)
		if p != nil {
			if p.code < 400 || p.code > 499 || p.msg == "" {
				t.Fatalf("problem %+v: want a 4xx with a message", p)
			}
			return
		}
		if len(b.Hosts) == 0 || len(b.Hosts) > 4096 {
			t.Fatalf("accepted %d hosts", len(b.Hosts))
		}
		if err := b.Options.Validate(); err != nil {
			t.Fatalf("accepted invalid options: %v", err)
		}
		for _, h := range b.Hosts {
			if err := (tasks.Policy{}).Check(h); err != nil {
				t.Fatalf("accepted a denied host: %v", err)
			}
		}
	})
}
