package aggregator

import (
	"context"
	"time"
)

// RecordInShard counts r in its shard of sharded batch id as a writer
// does, without telling the batch record when that completes the shard:
// a writer that stopped between the two.
func (a *Aggregator) RecordInShard(ctx context.Context, id string, r Result) error {
	l, err := a.layoutOf(ctx, id)
	if err != nil {
		return err
	}
	args, err := recordArgs(id, r)
	if err != nil {
		return err
	}
	cmd := recordScript.Run(ctx, a.rdb, l.recordKeys(id, l.of(r.Host)), append([]any{a.now().UnixMilli(), a.tail, 0}, args...)...)
	_, err = recordOutcomes(id, cmd, 1)
	return err
}

// BeginFinalize does the first step of finalizing sharded batch id only:
// a finalizer that stopped after it.
func (a *Aggregator) BeginFinalize(ctx context.Context, id string, state State) error {
	return finalizeBeginScript.Run(ctx, a.rdb, []string{metaKey(id)}, string(state)).Err()
}

// Shards is the number of shards of batch id's state.
func (a *Aggregator) Shards(ctx context.Context, id string) (int, error) {
	l, err := a.layoutOf(ctx, id)
	return l.n, err
}

// ShardOf is the shard of batch id that host's state is in.
func (a *Aggregator) ShardOf(ctx context.Context, id, host string) (int, error) {
	l, err := a.layoutOf(ctx, id)
	return l.of(host), err
}

// FillShards does what a Create of sharded batch id that overlaps another
// does after reading the record: fill the shards' pending sets with hosts.
func (a *Aggregator) FillShards(ctx context.Context, id string, hosts []string) error {
	l, err := a.layoutOf(ctx, id)
	if err != nil {
		return err
	}
	return a.fillShards(ctx, id, l, hosts, time.Hour)
}
