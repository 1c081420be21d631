package report_test

import (
	"os"
	"time"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/report"
	"github.com/pingfleet/pingfleet/tasks"
)

var results = []aggregator.Result{
	{Host: "10.0.0.1", IP: "10.0.0.1", Status: aggregator.StatusUp, Sent: 3, Received: 3, RTTMin: 0.412, RTTAvg: 0.530, RTTMax: 0.701, RTTStdev: 0.12, ReplyTTL: 64, Attempts: 1, Worker: "w1"},
	{Host: "db.internal", IP: "10.0.0.9", Status: aggregator.StatusDown, Sent: 3, LossPct: 100, Attempts: 1, Worker: "w1"},
	{Host: "nope.invalid", Status: aggregator.StatusError, Error: "lookup nope.invalid: no such host", Attempts: 1, Worker: "w2"},
}

func write(format string) {
	rw := report.NewResultWriter(os.Stdout, format, report.Options{})
	for _, r := range results {
		if err := rw.Write(r); err != nil {
			panic(err)
		}
	}
	if err := rw.Close(); err != nil {
		panic(err)
	}
}

// The table has fixed columns, so that rows go out as they come; RTTs are
// in milliseconds, "-" where no reply came.
func ExampleResultWriter_table() {
	write("table")
	// Output:
	// HOST                    IP               STATUS     SENT  RECV    LOSS   MIN ms   AVG ms   MAX ms    SD ms  TTL  ERROR
	// 10.0.0.1                10.0.0.1         up            3     3    0.0%    0.412    0.530    0.701    0.120   64
	// db.internal             10.0.0.9         down          3     0  100.0%        -        -        -        -    -
	// nope.invalid            -                error         0     0       -        -        -        -        -    -  lookup nope.invalid: no such host
}

func ExampleResultWriter_csv() {
	write("csv")
	// Output:
	// host,ip,status,sent,received,loss_pct,rtt_min_ms,rtt_avg_ms,rtt_max_ms,rtt_stddev_ms,reply_ttl,error,attempts,worker,started,finished,rtts_ms,name
	// 10.0.0.1,10.0.0.1,up,3,3,0,0.412,0.53,0.701,0.12,64,,1,w1,,,,
	// db.internal,10.0.0.9,down,3,0,100,,,,,,,1,w1,,,,
	// nope.invalid,,error,0,0,,,,,,,lookup nope.invalid: no such host,1,w2,,,,
}

// ndjson is one JSON object per line, for jq and log pipelines.
func ExampleResultWriter_ndjson() {
	write("ndjson")
	// Output:
	// {"host":"10.0.0.1","ip":"10.0.0.1","status":"up","sent":3,"received":3,"loss_pct":0,"rtt_min_ms":0.412,"rtt_avg_ms":0.53,"rtt_max_ms":0.701,"rtt_stddev_ms":0.12,"reply_ttl":64,"attempts":1,"worker":"w1"}
	// {"host":"db.internal","ip":"10.0.0.9","status":"down","sent":3,"received":0,"loss_pct":100,"rtt_min_ms":null,"rtt_avg_ms":null,"rtt_max_ms":null,"rtt_stddev_ms":null,"attempts":1,"worker":"w1"}
	// {"host":"nope.invalid","status":"error","sent":0,"received":0,"loss_pct":null,"rtt_min_ms":null,"rtt_avg_ms":null,"rtt_max_ms":null,"rtt_stddev_ms":null,"error":"lookup nope.invalid: no such host","attempts":1,"worker":"w2"}
}

func ExampleWriteSummary() {
	created := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	s := aggregator.Summary{
		ID: "01JEXAMPLE", State: aggregator.StateComplete, Labels: map[string]string{"job": "deploy", "env": "prod"},
		Options: tasks.PingOptions{Count: 2, Interval: tasks.Duration(200 * time.Millisecond)}, Total: 3, Done: 3, Up: 1, Down: 1, Error: 1,
		Sent: 6, Received: 3, LossPct: 50, RTTP50: 0.53, RTTP90: 0.53, RTTP99: 0.53, RTTMax: 0.53,
		Created: created, Started: created.Add(5 * time.Millisecond), Finished: created.Add(1500 * time.Millisecond), DurationSec: 1.5,
	}
	if err := report.WriteSummary(os.Stdout, "table", s); err != nil {
		panic(err)
	}
	// Output:
	// batch               01JEXAMPLE
	// state               complete
	// hosts               3 total, 3 done, 0 pending: 1 up, 1 down, 1 error, 0 cancelled, 0 expired
	// packets             6 sent, 3 received, 50.0% loss
	// rtt (per-host avg)  p50 0.530 ms, p90 0.530 ms, p99 0.530 ms, max 0.530 ms
	// options             count 2, interval 200ms, timeout 500ms, size 56, ttl 64
	// labels              env=prod, job=deploy
	// created             2026-12-01T20:00:00.000Z
	// started             2026-12-01T20:00:00.005Z (first ping)
	// finished            2026-12-01T20:00:01.500Z
	// duration            1.500s
}
