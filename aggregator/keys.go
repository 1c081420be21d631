package aggregator

import "context"

// Key names. The batch ID in braces is the Redis Cluster hash tag.
const indexKey = "pingfleet:batches"

func metaKey(id string) string    { return "pingfleet:{" + id + "}:meta" }
func hostsKey(id string) string   { return "pingfleet:{" + id + "}:hosts" }
func pendingKey(id string) string { return "pingfleet:{" + id + "}:pending" }
func resultsKey(id string) string { return "pingfleet:{" + id + "}:results" }
func rttKey(id string) string     { return "pingfleet:{" + id + "}:rtt" }
func eventsKey(id string) string  { return "pingfleet:{" + id + "}:events" }
func workersKey(id string) string { return "pingfleet:{" + id + "}:workers" }

// openKey indexes the batches whose lifecycle is not closed (not final, or
// final without its callback enqueued), scored by deadline.
const openKey = "pingfleet:open"

// Keys returns every key that holds state of batch id, for tests and tools:
// its record, host list, pending set, results, RTT histogram, event stream
// and worker names.
func Keys(id string) []string {
	return []string{metaKey(id), hostsKey(id), pendingKey(id), resultsKey(id), rttKey(id), eventsKey(id), workersKey(id)}
}

// KeysOf returns every key that holds state of batch id, Keys' and, when
// the batch is sharded, its shards'.
func (a *Aggregator) KeysOf(ctx context.Context, id string) ([]string, error) {
	l, err := a.layoutOf(ctx, id)
	if err != nil {
		return nil, err
	}
	keys := Keys(id)
	if l.sharded() {
		for j := range l.n {
			keys = append(keys, l.recordKeys(id, j)...)
		}
	}
	return keys, nil
}
