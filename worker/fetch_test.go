package worker

import "testing"

func TestDequeuedQueue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc  string
		keys  []string
		queue string
	}{
		{"asynq dequeue", []string{"asynq:{pingfleet-3}:pending", "asynq:{pingfleet-3}:paused", "asynq:{pingfleet-3}:active", "asynq:{pingfleet-3}:lease"}, "asynq:{pingfleet-3}:pending"},
		{"asynq done", []string{"asynq:{q}:active", "asynq:{q}:lease", "asynq:{q}:t:1", "asynq:{q}:processed:2026-11-25", "asynq:{q}:processed"}, ""},
		{"keys of two queues", []string{"asynq:{a}:pending", "asynq:{a}:paused", "asynq:{b}:active", "asynq:{b}:lease"}, ""},
		{"not asynq's", []string{"x:pending", "x:paused", "x:active", "x:lease"}, ""},
		{"no keys", nil, ""},
	} {
		q, ok := dequeuedQueue(tc.keys)
		if q != tc.queue || ok != (tc.queue != "") {
			t.Errorf("%s: dequeuedQueue = %q, %v; want %q", tc.desc, q, ok, tc.queue)
		}
	}
}
