package tasks_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/pingfleet/pingfleet/tasks"
)

func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	in := tasks.PingPayload{BatchID: "01ABC", Host: "db1.example", Options: tasks.PingOptions{Count: 3, Interval: tasks.Duration(200 * time.Millisecond)}}
	tk, err := tasks.NewPingTask(in, asynq.Queue("q"))
	if err != nil {
		t.Fatal(err)
	}
	if tk.Type() != tasks.TypePingHost {
		t.Errorf("type %q; want %q", tk.Type(), tasks.TypePingHost)
	}
	got, err := tasks.DecodePingPayload(tk.Payload())
	if err != nil {
		t.Fatal(err)
	}
	want := tasks.PingPayload{V: tasks.PayloadVersion, BatchID: "01ABC", Host: "db1.example", Options: tasks.PingOptions{
		Count: 3, Interval: tasks.Duration(200 * time.Millisecond), Timeout: tasks.Duration(tasks.DefaultTimeout),
		Size: tasks.DefaultSize, TTL: 64, Network: tasks.NetworkIP,
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded payload (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(tk.Payload()), `"interval":"200ms"`) {
		t.Errorf("payload %s: durations should be readable strings", tk.Payload())
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	base := tasks.PingOptions{}.Normalize()
	tests := []struct {
		desc    string
		mod     func(*tasks.PingOptions)
		wantErr string
	}{
		{"defaults", func(*tasks.PingOptions) {}, ""},
		{"count 0", func(o *tasks.PingOptions) { o.Count = 0 }, `count "0": must be between 1 and 10000`},
		{"count too high", func(o *tasks.PingOptions) { o.Count = 10001 }, `count "10001"`},
		{"interval under 1ms", func(o *tasks.PingOptions) { o.Interval = tasks.Duration(time.Microsecond) }, `interval "1µs": must be at least 1ms`},
		{"timeout 0", func(o *tasks.PingOptions) { o.Timeout = 0 }, `timeout "0s"`},
		{"timeout too long", func(o *tasks.PingOptions) { o.Timeout = tasks.Duration(2 * time.Minute) }, `timeout "2m0s"`},
		{"size too small", func(o *tasks.PingOptions) { o.Size = 8 }, `size "8": must be between 24 and 65500`},
		{"ttl", func(o *tasks.PingOptions) { o.TTL = 256 }, `ttl "256"`},
		{"network", func(o *tasks.PingOptions) { o.Network = "tcp" }, `network "tcp"`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			o := base
			tc.mod(&o)
			err := o.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v; want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate() = %v; want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	for _, p := range []string{
		``, `[]`, `{"v":2,"batch":"b","host":"h"}`, `{"v":1,"batch":"","host":"h"}`,
		`{"v":1,"batch":"b{x}","host":"h"}`, `{"v":1,"batch":"b","host":""}`,
		`{"v":1,"batch":"b","host":"h","opts":{"interval":5}}`,
	} {
		if _, err := tasks.DecodePingPayload([]byte(p)); !errors.Is(err, tasks.ErrInvalidPayload) {
			t.Errorf("DecodePingPayload(%s) error = %v; want ErrInvalidPayload", p, err)
		}
	}
}

func TestQueueSpread(t *testing.T) {
	t.Parallel()
	counts := map[string]int{}
	for i := range 8000 {
		q := tasks.Queue("127.0."+string(rune('a'+i%26))+"."+time.Duration(i).String(), tasks.DefaultShards)
		counts[q]++
	}
	if len(counts) != tasks.DefaultShards {
		t.Fatalf("hosts went to %d queues; want %d", len(counts), tasks.DefaultShards)
	}
	for q, n := range counts {
		if _, ok := tasks.Queues(tasks.DefaultShards)[q]; !ok || n < 500 {
			t.Errorf("queue %s got %d of 8000 hosts (known queue: %v)", q, n, ok)
		}
	}
	if tasks.Queue("x", 1) != tasks.Queue("y", 1) {
		t.Error("one shard should mean one queue")
	}
}

func TestRunTime(t *testing.T) {
	t.Parallel()
	o := tasks.PingOptions{Count: 3, Interval: tasks.Duration(time.Second), Timeout: tasks.Duration(500 * time.Millisecond)}
	if got := o.RunTime(); got != 2500*time.Millisecond {
		t.Errorf("RunTime = %v; want 2.5s", got)
	}
}

func TestDurationUnmarshalJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc, in string
		want     time.Duration
		wantErr  string
	}{
		{"plain string", `"250ms"`, 250 * time.Millisecond, ""},
		{"escaped characters", `"1\u0073"`, time.Second, ""},
		{"compound", `"1m30s"`, 90 * time.Second, ""},
		{"number", `5`, 0, `duration must be a string such as "250ms"`},
		{"not a duration", `"soon"`, 0, `time: invalid duration "soon"`},
		{"empty", `""`, 0, `time: invalid duration ""`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			var d tasks.Duration
			err := json.Unmarshal([]byte(tc.in), &d)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("Unmarshal(%s) error = %v; want %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil || d.D() != tc.want {
				t.Errorf("Unmarshal(%s) = %v, %v; want %v", tc.in, d, err, tc.want)
			}
		})
	}
}

// Without a count, options are fping's reachability mode; a count turns
// retries off; retries and a count above 1 exclude each other.
func TestRetryOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc    string
		in      tasks.PingOptions
		retries int
		runTime time.Duration
		err     string
	}{
		{"no count", tasks.PingOptions{}, 3, 500*time.Millisecond + 750*time.Millisecond + 1125*time.Millisecond + 1687500*time.Microsecond, ""},
		{"a count of 1", tasks.PingOptions{Count: 1}, 0, 500 * time.Millisecond, ""},
		{"retries of its own", tasks.PingOptions{Retries: 1, Backoff: 2, Timeout: tasks.Duration(time.Second)}, 1, 3 * time.Second, ""},
		{"count 3", tasks.PingOptions{Count: 3}, 0, 2*time.Second + 500*time.Millisecond, ""},
		{"count 3 and retries", tasks.PingOptions{Count: 3, Retries: 2}, 2, 0, `retries "2": only without a count (or a count of 1)`},
		{"backoff too small", tasks.PingOptions{Backoff: 0.5}, 3, 0, `backoff "0.5": must be between 1 and 5`},
		{"too many retries", tasks.PingOptions{Retries: 21}, 21, 0, `retries "21": must be between 0 and 20`},
	} {
		o := tc.in.Normalize()
		if o.Retries != tc.retries {
			t.Errorf("%s: %d retries; want %d", tc.desc, o.Retries, tc.retries)
		}
		err := o.Validate()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.desc, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v; want %q", tc.desc, err, tc.err)
		case tc.err == "" && o.RunTime() != tc.runTime:
			t.Errorf("%s: RunTime %v; want %v", tc.desc, o.RunTime(), tc.runTime)
		}
	}
}
