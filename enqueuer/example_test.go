package enqueuer_test

import (
	"fmt"
	"strings"

	"github.com/pingfleet/pingfleet/enqueuer"
)

// Host lists mix names, addresses, CIDRs, ranges and comments. A CIDR
// gives its hosts without the network and broadcast addresses, as fping -g
// does; duplicates go, and every bad entry is named with where it is.
func ExampleParseHosts() {
	entries, err := enqueuer.ReadEntries(strings.NewReader(`
# web tier
10.0.0.0/30
10.0.1.5-7
db.internal
10.0.0.1
10.0.2.300
`), "hosts.txt")
	if err != nil {
		panic(err)
	}
	hosts, errs := enqueuer.ParseHosts(entries, enqueuer.Limits{})
	fmt.Println(strings.Join(hosts, " "))
	for _, e := range errs {
		fmt.Println(e)
	}
	// Output:
	// 10.0.0.1 10.0.0.2 10.0.1.5 10.0.1.6 10.0.1.7 db.internal
	// hosts.txt:7: "10.0.2.300": invalid host: not a valid IPv4 address
}
