package aggregator

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// stored is what the record script keeps for r: its sequence number and
// worker number, then encodeResult's text.
func stored(seq int64, r Result) string {
	return strconv.FormatInt(seq, 10) + ",1," + string(encodeResult(r))
}

func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 1, 17, 24, 11, 454_000_000, time.UTC)
	rtt := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) } // as the handler does
	for _, tc := range []struct {
		desc string
		r    Result
	}{
		{"up, IP literal", Result{Host: "127.0.0.1", IP: "127.0.0.1", Status: StatusUp, Sent: 3, Received: 2, LossPct: 33.333,
			RTTMin: rtt(4123), RTTAvg: rtt(24_000_017), RTTMax: rtt(44_002_999), RTTStdev: rtt(20_000_001), ReplyTTL: 64, Attempts: 1,
			Started: start, Finished: start.Add(2503 * time.Millisecond)}},
		{"up, name", Result{Host: "db1.example.com", IP: "2001:db8::1", Status: StatusUp, Sent: 1, Received: 1,
			RTTMin: rtt(time.Minute), RTTAvg: rtt(time.Minute), RTTMax: rtt(time.Minute), ReplyTTL: 255, Attempts: 4, Started: start, Finished: start}},
		{"down with refused sends", Result{Host: "10.0.0.1", IP: "10.0.0.1", Status: StatusDown, Sent: 3, LossPct: 100, Attempts: 1,
			Error: "3 of 3 requests not sent: sendto: operation not permitted, again", Started: start, Finished: start.Add(time.Second)}},
		{"error, no address", Result{Host: "nope.invalid", Status: StatusError, Attempts: 1,
			Error: "resolve nope.invalid: no such host (.invalid is reserved, RFC 6761)", Started: start, Finished: start}},
		{"address with a zone full of separators", Result{Host: "fe80::1%a,b|c", IP: "fe80::1%x,y:z", Status: StatusUp, Sent: 1, Received: 1, RTTAvg: 1.5}},
		{"nothing but the status", Result{Host: "h", Status: StatusDown}},
		{"end without a start", Result{Host: "h", Status: StatusDown, Finished: start}},
		{"error text alone", Result{Host: "h", Status: StatusError, Error: ","}},
		{"each request's RTT, one lost", Result{Host: "127.0.0.1", IP: "127.0.0.1", Status: StatusUp, Sent: 3, Received: 2, LossPct: 33.333,
			RTTMin: rtt(4123), RTTAvg: rtt(5000), RTTMax: rtt(5877), RTTs: []float64{rtt(4123), -1, rtt(5877)}}},
		{"reverse name, RTTs and an error", Result{Host: "127.0.0.1", IP: "127.0.0.1", Name: "localhost", Status: StatusUp, Sent: 2, Received: 1, LossPct: 50,
			RTTMin: rtt(4123), RTTAvg: rtt(4123), RTTMax: rtt(4123), RTTs: []float64{-1, rtt(4123)}, Error: "1 of 2 requests not sent: x|y;z"}},
		{"reverse name of a resolved name", Result{Host: "db1", IP: "10.0.0.1", Name: "db1.example.com", Status: StatusDown, Sent: 1, LossPct: 100}},
		{"RTTs, no address, an error", Result{Host: "h", Status: StatusDown, Sent: 2, LossPct: 100, RTTs: []float64{-1, -1}, Error: "2 of 2 requests not sent: x;y"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			tc.r.Worker = "w1:42"
			got, seq, err := decodeResult(tc.r.Host, stored(7, tc.r), map[string]string{"1": "w1:42"})
			if err != nil {
				t.Fatal(err)
			}
			if seq != 7 {
				t.Errorf("seq = %d; want 7", seq)
			}
			if diff := cmp.Diff(tc.r, got); diff != "" {
				t.Errorf("round trip of %q (-want +got):\n%s", stored(7, tc.r), diff)
			}
		})
	}
}

func TestCodecLegacyJSON(t *testing.T) {
	t.Parallel()
	got, seq, err := decodeResult("127.0.0.1", `{"host":"127.0.0.1","status":"up","sent":1,"received":1,"rtt_avg_ms":0.5}`, nil)
	if err != nil || seq != 0 {
		t.Fatalf("decode = seq %d, %v", seq, err)
	}
	if want := (Result{Host: "127.0.0.1", Status: StatusUp, Sent: 1, Received: 1, RTTAvg: 0.5}); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v; want %+v", got, want)
	}
}

func TestCodecMalformed(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"", "1,1,u", "1,1,x,,,,,,,,,,,", "1,1,u,a,,,,,,,,,,", "1,1,u,,,,,,,,,,,9:short", "1,1,u,,,,,,,,,,,junk"} {
		if _, _, err := decodeResult("h", v, nil); err == nil {
			t.Errorf("decodeResult(%q) = nil error; want malformed", v)
		}
	}
}

// FuzzCodec checks that whatever the handler can record comes back as it
// went in.
func FuzzCodec(f *testing.F) {
	f.Add("127.0.0.1", "127.0.0.1", 2, 2, int64(4123), int64(24000), 64, 1, int64(1764612345678), int64(1003), "", uint8(0))
	f.Add("db1", "", 0, 0, int64(0), int64(0), 0, 2, int64(0), int64(0), "resolve db1: no such host", uint8(2))
	f.Fuzz(func(t *testing.T, host, ip string, sent, recv int, rtt1, rtt2 int64, ttl, attempts int, startMs, tookMs int64, errText string, status uint8) {
		perRequest := status&4 != 0 // and each request's RTT
		if sent < 0 || recv < 0 || ttl < 0 || attempts < 0 || rtt1 < 0 || rtt2 < 0 || startMs < 0 || startMs > 1<<45 || tookMs < -1<<40 || tookMs > 1<<40 {
			t.Skip()
		}
		r := Result{Host: host, IP: ip, Status: []Status{StatusUp, StatusDown, StatusError}[status%3], Sent: sent, Received: recv,
			RTTMin: nsToMs(rtt1), RTTAvg: nsToMs(rtt2), RTTMax: nsToMs(rtt1 + rtt2), RTTStdev: nsToMs(rtt2 / 3),
			ReplyTTL: ttl, Attempts: attempts, Error: errText, Worker: "w"}
		r.LossPct = LossPct(sent, recv)
		if perRequest {
			r.RTTs = []float64{nsToMs(rtt1), -1, nsToMs(rtt2)}
		}
		if status&8 != 0 { // and a reverse name, as the handler keeps them
			r.Name = "h-1.example.org"
		}
		if startMs > 0 {
			r.Started = time.UnixMilli(startMs).UTC()
			r.Finished = time.UnixMilli(startMs + tookMs).UTC()
		}
		got, _, err := decodeResult(host, stored(1, r), map[string]string{"1": "w"})
		if err != nil {
			t.Fatalf("decode %q: %v", stored(1, r), err)
		}
		if diff := cmp.Diff(r, got); diff != "" {
			t.Errorf("round trip of %q (-want +got):\n%s", stored(1, r), diff)
		}
	})
}

func TestLossPct(t *testing.T) {
	for _, tc := range []struct {
		sent, received int
		want           float64
	}{
		{0, 0, 0}, {3, 3, 0}, {3, 2, 33.333}, {3, 0, 100}, {200, 47, 76.5}, {92, 72, 21.739},
	} {
		if got := LossPct(tc.sent, tc.received); got != tc.want {
			t.Errorf("LossPct(%d, %d) = %v; want %v", tc.sent, tc.received, got, tc.want)
		}
	}
}

// Summary's JSON has a field for each of Summary's, under the same name
// and in the same order (summaryJSON mirrors it), nulls where nothing was
// measured.
func TestSummaryJSONMirrorsSummary(t *testing.T) {
	st, mt := reflect.TypeFor[Summary](), reflect.TypeFor[summaryJSON]()
	if st.NumField() != mt.NumField() {
		t.Fatalf("Summary has %d fields, summaryJSON %d", st.NumField(), mt.NumField())
	}
	for i := range st.NumField() {
		if a, b := st.Field(i), mt.Field(i); a.Name != b.Name || a.Tag != b.Tag {
			t.Errorf("field %d: Summary's %s %q, summaryJSON's %s %q", i, a.Name, a.Tag, b.Name, b.Tag)
		}
	}
	b, err := json.Marshal(Summary{ID: "x", Total: 2, Done: 2, Expired: 2, LossPct: 0, RTTP50: 0})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{`"loss_pct":null`, `"rtt_p50_ms":null`, `"rtt_max_ms":null`} {
		if !strings.Contains(string(b), f) {
			t.Errorf("summary of a batch with nothing sent: %s; want %s", b, f)
		}
	}
	b, _ = json.Marshal(Summary{ID: "x", Sent: 2, Received: 1, LossPct: 50, Up: 1, RTTP50: 1.5, RTTMax: 2})
	if !strings.Contains(string(b), `"loss_pct":50,"rtt_p50_ms":1.5,"rtt_p90_ms":0,"rtt_p99_ms":0,"rtt_max_ms":2,`) {
		t.Errorf("summary with a host up: %s", b)
	}
}
