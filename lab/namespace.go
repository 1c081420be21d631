package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
)

// txQueueLen is the TUN device's queue of packets not read yet: the
// default (500) loses requests in bursts of thousands of pings, and 10,000
// lost some when 10,000 pings started at once on a loaded machine (CI).
const txQueueLen = 100000

// netnsDir is where ip netns keeps its named namespaces.
const netnsDir = "/var/run/netns"

// namespaces numbers the namespaces of this process.
var namespaces atomic.Uint64

// Lab is a running lab: a network namespace with a TUN device routed to
// Network and a Responder answering on it. Close it to remove it; Close
// also reports whether the responder failed.
type Lab struct {
	ns     string
	dev    *os.File
	resp   *Responder
	cancel context.CancelFunc
	// kernelLoss is set when nftables rules drop requests (Range.KernelLoss).
	kernelLoss bool
	served     chan error // receives Serve's result, once

	closeOnce sync.Once
	closeErr  error
}

// Start creates a network namespace, the TUN device cfg.Device in it, and
// a Responder for cfg serving it in a goroutine of this process. It needs
// root (CAP_SYS_ADMIN and CAP_NET_ADMIN), /dev/net/tun and the ip command
// of iproute2. ctx bounds the setup only: the lab runs until Close. If
// Start fails, it leaves nothing behind.
//
// Inside the namespace the TUN device has the address LocalAddr and the
// route to Network, nftables rules drop requests for Range.KernelLoss (this
// needs the nft command), net.ipv4.ping_group_range allows unprivileged ICMP
// sockets to every group, and rp_filter is off.
func Start(ctx context.Context, cfg Config) (_ *Lab, err error) {
	cfg = cfg.withDefaults()
	if cfg.Namespace == "" {
		cfg.Namespace = fmt.Sprintf("pflab-%d-%d", os.Getpid(), namespaces.Add(1))
	}
	resp, err := NewResponder(cfg)
	if err != nil {
		return nil, err
	}
	if err := ip(ctx, nil, "netns", "add", cfg.Namespace); err != nil {
		return nil, fmt.Errorf("create network namespace %s: %w", cfg.Namespace, err)
	}
	l := &Lab{ns: cfg.Namespace, resp: resp, served: make(chan error, 1)}
	defer func() {
		if err != nil {
			if l.dev != nil {
				l.dev.Close()
			}
			_ = ip(context.Background(), nil, "netns", "del", l.ns)
		}
	}()

	if err := l.Do(func() error {
		var err error
		l.dev, err = setupInside(cfg.Device)
		return err
	}); err != nil {
		return nil, err
	}
	script := fmt.Sprintf("link set lo up\n"+
		"link set %[1]s txqueuelen %[2]d up\n"+
		"address add %[3]s/32 dev %[1]s\n"+
		"route add %[4]s dev %[1]s src %[3]s\n",
		cfg.Device, txQueueLen, LocalAddr, Network)
	if err := ip(ctx, strings.NewReader(script), "-n", l.ns, "-batch", "-"); err != nil {
		return nil, fmt.Errorf("configure network namespace %s: %w", l.ns, err)
	}
	if kernelLoss(cfg.Ranges) {
		if err := l.setupKernelLoss(ctx, cfg.Device, cfg.Ranges); err != nil {
			return nil, err
		}
		l.kernelLoss = true
	}

	srvCtx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() { l.served <- resp.Serve(srvCtx, l.dev) }()
	return l, nil
}

// setupInside sets the namespace's sysctls and creates its TUN device; it
// runs on a thread inside the namespace, where /proc/sys/net is the
// namespace's.
func setupInside(device string) (*os.File, error) {
	sysctls := []struct{ name, value string }{
		{"ipv4/conf/all/rp_filter", "0"},
		{"ipv4/conf/default/rp_filter", "0"},
		{"ipv4/ping_group_range", "0 2147483647"},
	}
	for _, s := range sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys/net", s.name), []byte(s.value), 0); err != nil {
			return nil, fmt.Errorf("sysctl net.%s: %w", strings.ReplaceAll(s.name, "/", "."), err)
		}
	}
	// IPv6 on the TUN would only add router solicitations for the
	// responder to ignore. Kernels without IPv6 have no such file: fine.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
	dev, err := openTUN(device)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+device+"/rp_filter", []byte("0"), 0); err != nil {
		dev.Close()
		return nil, fmt.Errorf("sysctl net.ipv4.conf.%s.rp_filter: %w", device, err)
	}
	return dev, nil
}

// Namespace returns the name of the lab's network namespace, as ip netns
// knows it.
func (l *Lab) Namespace() string { return l.ns }

// Stats returns the responder's counters so far.
func (l *Lab) Stats() Stats { return l.resp.Stats() }

// Exec returns a command that runs name with args inside the lab's
// namespace (ip netns exec), as exec.CommandContext would.
func (l *Lab) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns, name}, args...)...)
}

// Do calls fn on an OS thread of this process moved into the lab's
// namespace, and returns its error: DoIn for the lab's namespace.
func (l *Lab) Do(fn func() error) error { return DoIn(l.ns, fn) }

// DoIn calls fn on an OS thread of this process moved into the network
// namespace ns (as ip netns names it), and returns its error. The sockets
// fn opens belong to the namespace and keep working from any goroutine
// afterwards; goroutines fn starts do not run in the namespace. The thread
// is discarded when fn returns, so no other goroutine ever runs in the
// namespace by accident.
func DoIn(ns string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := joinNamespace(ns); err != nil {
			done <- err
			return
		}
		done <- fn()
	}()
	return <-done
}

// Close stops the responder and deletes the namespace. Replies still
// waiting for their delay are lost. Close is safe to call more than once;
// the later calls return the first one's result.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		l.cancel()
		serveErr := <-l.served
		closeErr := l.dev.Close()
		delErr := ip(context.Background(), nil, "netns", "del", l.ns)
		if delErr != nil {
			delErr = fmt.Errorf("delete network namespace %s: %w", l.ns, delErr)
		}
		l.closeErr = errors.Join(serveErr, closeErr, delErr)
	})
	return l.closeErr
}

// ip runs the ip command of iproute2 with args and stdin; its error holds
// what ip printed.
func ip(ctx context.Context, stdin *strings.Reader, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(out.String()); msg != "" {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, msg)
		}
		return fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
	}
	return nil
}
