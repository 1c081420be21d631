package tasks

import (
	"bytes"
	"testing"
	"time"
)

// FuzzPayloadWriter checks that PayloadWriter writes what NewPingTask does,
// byte for byte, and refuses what it refuses.
func FuzzPayloadWriter(f *testing.F) {
	f.Add("01KB2ZQ2X3", "127.0.0.1", 2, int64(time.Second), "ip")
	f.Add("b", "fe80::1%eth<0>&", 1, int64(time.Millisecond), "ip6")
	f.Add("b", "caf\xc3\xa9.example", 3, int64(0), "")
	f.Add("b", "bad host", 1, int64(0), "")
	f.Fuzz(func(t *testing.T, batch, host string, count int, interval int64, network string) {
		opts := PingOptions{Count: count, Interval: Duration(interval), Network: network}
		w, werr := NewPayloadWriter(batch, opts)
		task, terr := NewPingTask(PingPayload{BatchID: batch, Host: host, Options: opts})
		if werr != nil {
			if terr == nil {
				t.Fatalf("NewPayloadWriter(%q, %+v): %v; NewPingTask accepts it", batch, opts, werr)
			}
			return
		}
		got, err := w.Append(nil, host)
		if (err != nil) != (terr != nil) {
			t.Fatalf("Append(%q): %v; NewPingTask: %v", host, err, terr)
		}
		if err != nil {
			return
		}
		if !bytes.Equal(got, task.Payload()) {
			t.Errorf("Append(%q) = %s; NewPingTask writes %s", host, got, task.Payload())
		}
	})
}
