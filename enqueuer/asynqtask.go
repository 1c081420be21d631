package enqueuer

import (
	"strconv"
	"time"

	"github.com/pingfleet/pingfleet/tasks"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"
)

// asynq v0.26 enqueues one task per script call, which on a 2-core machine
// caps an enqueuer at 42,000 tasks/s (bench/README.md, "Enqueue"): a Lua
// call per task in Redis, and a goroutine, an options list, a UUID and a
// protobuf message per task in the client. The enqueuer writes what that
// script writes, in asynq's layout, for many tasks per call instead; asynq
// servers and the Inspector see the same tasks (TestAsynqReadsOurTasks
// compares the two byte for byte, so an asynq upgrade that changes its
// layout fails it).

// asynq's Redis key layout (internal/base/base.go).
const asynqAllQueues = "asynq:queues"

func asynqPendingKey(queue string) string    { return tasks.AsynqKeys(queue) + ":pending" }
func asynqTaskKeyPrefix(queue string) string { return tasks.AsynqKeys(queue) + ":t:" }

// appendTaskMessage appends asynq's TaskMessage protobuf (proto/asynq.proto)
// for a task with these fields, in field order, as proto.Marshal writes it:
// type (1), payload (2), id (3), queue (4), retry (5) and timeout in seconds
// (8); the zero deadline, retention and the rest are not written.
func appendTaskMessage(b []byte, typ string, payload []byte, id, queue string, retry int, timeout time.Duration) []byte {
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, typ)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, payload)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendString(b, id)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, queue)
	if retry != 0 {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(int32(retry))))
	}
	if secs := int64(timeout.Seconds()); secs != 0 {
		b = protowire.AppendTag(b, 8, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(secs))
	}
	return b
}

// enqueueScript is asynq's enqueue script (rdb.go, enqueueCmd) for many
// tasks of one queue: a task whose key exists is left alone (a task ID
// conflict, here a host already queued), every other one gets its hash and
// goes to the queue's pending list, in order. KEYS[1] is the pending list;
// ARGV[1] the time in Unix nanoseconds, ARGV[2] the task key prefix, then
// an ID and a message per task. It returns how many it added.
var enqueueScript = redis.NewScript(`
local added = 0
for i = 3, #ARGV, 2 do
  local key = ARGV[2] .. ARGV[i]
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'msg', ARGV[i + 1], 'state', 'pending', 'pending_since', ARGV[1])
    redis.call('LPUSH', KEYS[1], ARGV[i])
    added = added + 1
  end
end
return added
`)

func nanos(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }
