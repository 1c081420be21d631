package tasks_test

import (
	"fmt"
	"time"

	"github.com/pingfleet/pingfleet/tasks"
)

// One host of a batch becomes one task: its type, its payload (the batch,
// the host and options with defaults filled in) and the queue it goes to.
func ExampleNewPingTask() {
	p := tasks.PingPayload{BatchID: "01JEXAMPLE", Host: "10.0.0.1", Options: tasks.PingOptions{Count: 3, Interval: tasks.Duration(200 * time.Millisecond)}}
	t, err := tasks.NewPingTask(p)
	if err != nil {
		panic(err)
	}
	fmt.Println(t.Type())
	fmt.Println(string(t.Payload()))
	fmt.Println(tasks.Queue(p.Host, tasks.DefaultShards), tasks.TaskID(p.BatchID, p.Host))

	_, err = tasks.NewPingTask(tasks.PingPayload{BatchID: "01JEXAMPLE", Host: "10.0.0.1", Options: tasks.PingOptions{Count: -1}})
	fmt.Println(err)
	// Output:
	// ping:host
	// {"v":1,"batch":"01JEXAMPLE","host":"10.0.0.1","opts":{"count":3,"interval":"200ms","timeout":"500ms","size":56,"ttl":64,"network":"ip"}}
	// pingfleet-5 01JEXAMPLE/10.0.0.1
	// invalid ping payload: count "-1": must be between 1 and 10000
}
