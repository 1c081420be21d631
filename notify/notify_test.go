package notify_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"go.uber.org/goleak"

	"github.com/pingfleet/pingfleet/aggregator"
	"github.com/pingfleet/pingfleet/internal/deathsig"
	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/notify"
	"github.com/pingfleet/pingfleet/tasks"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(deathsig.Spawner)) }

func TestSign(t *testing.T) {
	t.Parallel()
	// HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), a published test vector.
	got := notify.Sign([]byte("key"), []byte("The quick brown fox jumps over the lazy dog"))
	if want := "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"; got != want {
		t.Errorf("Sign = %s; want %s", got, want)
	}
}

func TestSenderOutcomes(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	agg, err := aggregator.New(aggregator.Config{Client: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	status := http.StatusOK
	rs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Idempotency-Key") != "cb" || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("headers %v", r.Header)
		}
		w.WriteHeader(status)
	}))
	defer rs.Close()
	ctx := context.Background()
	if _, err := agg.Create(ctx, aggregator.Batch{ID: "cb", Hosts: []string{"127.0.0.1"}, CallbackURL: rs.URL}); err != nil {
		t.Fatal(err)
	}
	s, err := notify.NewSender(notify.SenderConfig{Aggregator: agg, Policy: loopbackCallbacks})
	if err != nil {
		t.Fatal(err)
	}
	task, err := tasks.NewCallbackTask("cb", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ProcessTask(ctx, task); err != nil {
		t.Errorf("2xx: %v", err)
	}
	status = http.StatusBadGateway
	if err := s.ProcessTask(ctx, task); err == nil || errors.Is(err, asynq.SkipRetry) {
		t.Errorf("502: error %v; want a retryable error", err)
	}
	gone, _ := tasks.NewCallbackTask("gone", time.Hour)
	if err := s.ProcessTask(ctx, gone); !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("unknown batch: %v; want SkipRetry", err)
	}
	if err := s.ProcessTask(ctx, asynq.NewTask(tasks.TypeBatchCallback, []byte("{"))); !errors.Is(err, asynq.SkipRetry) {
		t.Errorf("bad payload: %v; want SkipRetry", err)
	}
	if got := notify.RetryDelay(1); got != 2*time.Second {
		t.Errorf("RetryDelay(1) = %v", got)
	}
	if got := notify.RetryDelay(20); got != 5*time.Minute {
		t.Errorf("RetryDelay(20) = %v", got)
	}
}
