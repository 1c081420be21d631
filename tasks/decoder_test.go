package tasks_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/pingfleet/pingfleet/tasks"
)

func payload(t testing.TB, host string, o tasks.PingOptions) []byte {
	t.Helper()
	task, err := tasks.NewPingTask(tasks.PingPayload{BatchID: "01KAW3Z7J8Q2", Host: host, Options: o})
	if err != nil {
		t.Fatal(err)
	}
	return task.Payload()
}

// sameAsDecodePingPayload checks that d decodes b as DecodePingPayload does,
// the first time and again (from what it remembers).
func sameAsDecodePingPayload(t *testing.T, d *tasks.Decoder, b []byte) {
	t.Helper()
	want, wantErr := tasks.DecodePingPayload(b)
	for _, round := range []string{"first", "second"} {
		got, err := d.Decode(b)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) {
			t.Errorf("%s Decode(%s) error = %v; want %v", round, b, err, wantErr)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s Decode(%s) (-want +got):\n%s", round, b, diff)
		}
	}
}

func TestDecoderCanonical(t *testing.T) {
	t.Parallel()
	var d tasks.Decoder
	for _, tc := range []struct {
		host string
		o    tasks.PingOptions
	}{
		{"127.0.0.1", tasks.PingOptions{}},
		{"127.0.0.2", tasks.PingOptions{Count: 3, Interval: tasks.Duration(200 * time.Millisecond)}},
		{"fe80::1%eth0", tasks.PingOptions{Network: tasks.NetworkIP6, Interface: "eth0", TOS: 16, DontFragment: true}},
		{"db1.example.com", tasks.PingOptions{Network: tasks.NetworkIP4, Source: "10.0.0.1", Mark: 7, BatchRate: 100, Size: 1400, TTL: 5}},
	} {
		b := payload(t, tc.host, tc.o)
		if _, _, ok := d.Known(b); ok {
			t.Errorf("Known(%s) before Decode: ok", b)
		}
		sameAsDecodePingPayload(t, &d, b)
		// Another host of the same batch is known at once.
		other := payload(t, "127.9.9.9", tc.o)
		got, err, ok := d.Known(other)
		want, wantErr := tasks.DecodePingPayload(other)
		if !ok || err != nil || wantErr != nil || !cmp.Equal(want, got) {
			t.Errorf("Known(%s) = %+v, %v, %v; want %+v", other, got, err, ok, want)
		}
	}
}

// Payloads in other layouts, or that JSON must unescape, or that are
// invalid, decode (or fail) exactly as DecodePingPayload says.
func TestDecoderOtherPayloads(t *testing.T) {
	t.Parallel()
	opts := `{"count":2,"interval":"1s","timeout":"500ms","size":56,"ttl":64,"network":"ip"}`
	for _, b := range []string{
		`{"v":1,"batch":"B","host":"127.0.0.1","opts":` + opts + `}`,
		`{"v":1, "batch":"B","host":"127.0.0.1","opts":` + opts + `}`,
		`{"batch":"B","v":1,"host":"127.0.0.1","opts":` + opts + `}`,
		`{"v":1,"batch":"B","host":"127.0.0.\u0031","opts":` + opts + `}`,
		`{"v":1,"batch":"B","host":"127.0.0.1","opts":` + opts + `,"host":"127.0.0.9"}`,
		`{"v":01,"batch":"B","host":"127.0.0.1","opts":` + opts + `}`,
		`{"v":2,"batch":"B","host":"127.0.0.1","opts":` + opts + `}`,
		`{"v":1,"batch":"B/C","host":"127.0.0.1","opts":` + opts + `}`,
		`{"v":1,"batch":"B","host":"","opts":` + opts + `}`,
		`{"v":1,"batch":"B","host":"héte","opts":` + opts + `}`,
		`{"v":1,"batch":"B","host":"127.0.0.1","opts":{"count":0}}`,
		`{"v":1,"batch":"B","host":"127.0.0.1","opts":{"count":2,"timeout":"0s"}}`,
		`{"v":1,"batch":"B","host":"127.0.0.1","opts":{"count":2}`,
		`{"v":1,"batch":"B","host":"127.0.0.1","opts":{}}`,
		`{"v":1,"batch":"B","host":"127.0.0.1","opts":{}}}`,
		`{"v":1,"batch":"B","host":"127.0.0.1"}`,
		`not json`,
		``,
	} {
		sameAsDecodePingPayload(t, &tasks.Decoder{}, []byte(b))
	}
	// What one payload taught is used only for the same options text.
	var d tasks.Decoder
	for _, b := range []string{
		`{"v":1,"batch":"B","host":"127.0.0.1","opts":` + opts + `}`,
		`{"v":1,"batch":"B","host":"127.0.0.1","opts":` + opts + `,"host":"127.0.0.9"}`,
		`{"v":1,"batch":"B","host":"127.0.0.2","opts":` + opts + `,"host":"127.0.0.9"}`,
		`{"v":2,"batch":"B","host":"127.0.0.1","opts":` + opts + `}`,
		`{"v":1,"batch":"","host":"127.0.0.1","opts":` + opts + `}`,
		`{"v":1,"batch":"B","host":"127.0.0.1","opts":{"count":2,"timeout":"0s"}}`,
		`{"v":1,"batch":"B","host":"127.0.0.3","opts":{"count":2,"timeout":"0s"}}`,
	} {
		sameAsDecodePingPayload(t, &d, []byte(b))
	}
}

func FuzzDecoder(f *testing.F) {
	f.Add(payload(f, "127.0.0.1", tasks.PingOptions{}))
	f.Add(payload(f, "fe80::1%eth0", tasks.PingOptions{Network: tasks.NetworkIP6, Count: 3}))
	f.Add([]byte(`{"v":1,"batch":"B","host":"127.0.0.1","opts":{"count":2},"host":"x"}`))
	var d tasks.Decoder
	f.Fuzz(func(t *testing.T, b []byte) {
		sameAsDecodePingPayload(t, &d, b)
	})
}

func BenchmarkDecoder(b *testing.B) {
	pl := payload(b, "127.1.2.3", tasks.PingOptions{Count: 2, Interval: tasks.Duration(time.Second)})
	b.Run("DecodePingPayload", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tasks.DecodePingPayload(pl); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Decoder", func(b *testing.B) {
		var d tasks.Decoder
		b.ReportAllocs()
		for b.Loop() {
			if _, err := d.Decode(pl); err != nil {
				b.Fatal(err)
			}
		}
	})
}
