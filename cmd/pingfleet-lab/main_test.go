package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pingfleet/pingfleet/internal/testkit"
	"github.com/pingfleet/pingfleet/lab/labtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no command", nil, 2, "usage: pingfleet-lab up"},
		{"unknown command", []string{"down"}, 2, "usage: pingfleet-lab up"},
		{"unknown flag", []string{"up", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"bad seed", []string{"up", "--seed", "x"}, 2, `invalid value "x" for flag -seed`},
		{"extra argument", []string{"up", "more"}, 2, `unexpected argument "more"`},
		{"help", []string{"up", "-h"}, 0, "name of the network namespace"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := Main(t.Context(), tc.args, &stdout, &stderr)
			if code != tc.wantCode || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr.String(), tc.wantCode, tc.wantErr)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout: %q, want nothing", stdout.String())
			}
		})
	}
}

// TestUp runs the lab as the command does, pings into it, stops it as a
// signal would, and checks that the namespace is gone.
func TestUp(t *testing.T) {
	t.Parallel()
	labtest.Require(t)
	name := fmt.Sprintf("pflab-cmd-%d", os.Getpid())
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var stdout, stderr testkit.SyncBuffer
	done := make(chan int, 1)
	args := []string{"up", "--name", name, "--seed", "7"}
	_, noNft := exec.LookPath("nft")
	if noNft == nil {
		args = append(args, "--kernel-loss")
	}
	go func() { done <- Main(ctx, args, &stdout, &stderr) }()

	hint := "run commands inside it with: ip netns exec " + name + " <cmd>"
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stdout.String(), hint) {
		select {
		case code := <-done:
			t.Fatalf("exit %d before the lab was up; stderr:\n%s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q within 10s; stdout:\n%s", hint, stdout.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(stdout.String(), "198.18.1.0/24 delay50: delay 50ms ±5ms") {
		t.Errorf("ranges not listed:\n%s", stdout.String())
	}
	if noNft == nil && !strings.Contains(stdout.String(), "198.18.6.0/24 kloss50: delay 0s, kernel loss 50% (nftables)") {
		t.Errorf("--kernel-loss ranges not listed:\n%s", stdout.String())
	}
	if _, err := exec.LookPath("fping"); err == nil {
		out, err := exec.Command("ip", "netns", "exec", name, "fping", "-c", "2", "-p", "20", "-q", "198.18.0.1").CombinedOutput()
		if err != nil {
			t.Errorf("fping in the lab: %v\n%s", err, out)
		}
	}

	stop()
	if code := <-done; code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "namespace "+name+" removed") {
		t.Errorf("no removal reported:\n%s", stdout.String())
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			t.Errorf("namespace %s left behind", name)
		}
	}
}
