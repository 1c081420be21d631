// Command pingfleet-lab runs the lab of package lab: fake hosts in
// 198.18.0.0/15 with controlled latency, loss and dead ranges, inside a
// network namespace, until interrupted. It needs root.
//
//	pingfleet-lab up [--name pflab] [--seed 1] [--kernel-loss]
//	ip netns exec pflab fping -c 20 -p 20 198.18.2.1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/pingfleet/pingfleet/lab"
)

const usage = `usage: pingfleet-lab up [--name NAME] [--seed N] [--kernel-loss]

up   creates the network namespace NAME with the standard lab in it, serves
     it until SIGINT or SIGTERM, then removes it. Needs root. --kernel-loss
     adds ranges whose requests nftables drops (needs the nft command).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Main runs the command with args until ctx is done and returns its exit
// code: 0 on success, 1 when the lab fails, 2 on bad usage.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "up" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("pingfleet-lab up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "pflab", "name of the network namespace to create")
	seed := fs.Uint64("seed", 1, "seed of the random loss and jitter")
	kernelLoss := fs.Bool("kernel-loss", false, "add the ranges that lose requests in the kernel (nftables): 198.18.5.0/24 20 %, 198.18.6.0/24 50 %")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "pingfleet-lab up: unexpected argument %q\n%s", fs.Arg(0), usage)
		return 2
	}

	cfg := lab.Config{Ranges: lab.DefaultRanges(), Namespace: *name, Seed: *seed}
	if *kernelLoss {
		cfg.Ranges = append(cfg.Ranges, lab.KernelLossRanges()...)
	}
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "pingfleet-lab: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "lab up in network namespace %s (seed %d):\n", l.Namespace(), *seed)
	for _, r := range cfg.Ranges {
		fmt.Fprintf(stdout, "  %s\n", r)
	}
	fmt.Fprintf(stdout, "other addresses of %s answer at once; %s is the namespace's own\n", lab.Network, lab.LocalAddr)
	fmt.Fprintf(stdout, "run commands inside it with: ip netns exec %s <cmd>\n", l.Namespace())

	<-ctx.Done()
	s := l.Stats()
	kernel, kerr := l.KernelDropped(context.Background())
	if err := l.Close(); err != nil {
		fmt.Fprintf(stderr, "pingfleet-lab: %v\n", err)
		return 1
	}
	if kerr != nil {
		fmt.Fprintf(stderr, "pingfleet-lab: %v\n", kerr)
	}
	fmt.Fprintf(stdout, "requests %d, replies %d, dropped %d (and %d by nftables), dead %d, ignored %d; namespace %s removed\n",
		s.Requests, s.Replies, s.Dropped, kernel, s.Dead, s.Ignored, l.Namespace())
	return 0
}
