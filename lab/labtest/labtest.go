// Package labtest gives tests a lab (package lab) of their own, and skips
// them, saying why, where a lab cannot run: not root, no /dev/net/tun, no
// ip command, or no right to create network namespaces.
//
//	l := labtest.Start(t, lab.Config{Seed: 1})
//	out, err := l.Exec(ctx, "fping", "-c", "3", "198.18.1.1").CombinedOutput()
package labtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/lab"
)

// Require skips t unless this process can start a lab. The check runs
// once per process.
func Require(t testing.TB) {
	t.Helper()
	if reason := unavailable(); reason != "" {
		t.Skip("lab unavailable: " + reason)
	}
}

// Start starts a lab for cfg, after Require, and closes it when t ends.
// A lab that fails to start or to close fails t.
func Start(t testing.TB, cfg lab.Config) *lab.Lab {
	t.Helper()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := lab.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	return l
}

// unavailable returns why a lab cannot run here, or "".
var unavailable = sync.OnceValue(func() string {
	switch {
	case runtime.GOOS != "linux":
		return "needs Linux, not " + runtime.GOOS
	case os.Geteuid() != 0:
		return "needs root (network namespaces and a TUN device); run the tests with sudo"
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Sprintf("no TUN support: %v (modprobe tun, or in a container add --device /dev/net/tun)", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "ip command not found; install iproute2"
	}
	probe := fmt.Sprintf("pflab-probe-%d", os.Getpid())
	out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Sprintf("cannot create a network namespace (in a container, it needs --privileged or CAP_SYS_ADMIN): ip netns add: %s", out)
		}
		return fmt.Sprintf("ip netns add: %v", err)
	}
	_ = exec.Command("ip", "netns", "del", probe).Run()
	return ""
})

// StartStar starts a lab.Star of spokes spokes, and removes it when t
// ends. It skips t as Require does (the star needs no TUN device, but the
// same root and namespaces), and when the nft command is missing.
func StartStar(t testing.TB, spokes int) *lab.Star {
	t.Helper()
	Require(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft command not found (cutting a star's links needs it); install nftables")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := lab.StartStar(ctx, spokes)
	if err != nil {
		t.Fatalf("start star: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close star: %v", err)
		}
	})
	return s
}
