//go:build linux

package lab_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/lab"
	"github.com/pingfleet/pingfleet/lab/labtest"
)

// dialFrom connects to addr from inside namespace ns.
func dialFrom(ns, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := lab.DoIn(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

// A star's spokes reach the hub's address over their links, not each
// other; a cut link drops the traffic of a connection already open, and
// restored, the same connection goes on.
func TestStar(t *testing.T) {
	s := labtest.StartStar(t, 2)
	var ln net.Listener
	if err := lab.DoIn(s.Hub, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(lab.HubAddr.String(), "7000"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	from := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			from <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()

	conns := make([]net.Conn, len(s.Spokes))
	for i, sp := range s.Spokes {
		c, err := dialFrom(sp.Namespace, ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatalf("spoke %d: dial the hub: %v", i, err)
		}
		defer c.Close()
		conns[i] = c
		if got := <-from; got != sp.Addr.String() {
			t.Errorf("spoke %d: the hub saw a connection from %s; want %s", i, got, sp.Addr)
		}
		echo(t, c, "hello", time.Second)
	}
	// No route between spokes (nor anywhere else: this namespace's routes
	// are not the star's, so nothing here dials it).
	if c, err := dialFrom(s.Spokes[0].Namespace, s.Spokes[1].Addr.String()+":7000", time.Second); err == nil {
		c.Close()
		t.Error("spoke 0 reached spoke 1")
	}

	ctx := context.Background()
	if err := s.Cut(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := conns[0].SetDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := conns[0].Write([]byte("lost?")); err != nil {
		t.Fatal(err) // the kernel queues it: a cut link fails nothing at once
	}
	buf := make([]byte, 16)
	if _, err := conns[0].Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read across a cut link: %v; want a timeout", err)
	}
	echo(t, conns[1], "still here", time.Second) // the other link is untouched
	if err := s.Restore(ctx, 0); err != nil {
		t.Fatal(err)
	}
	// TCP retransmits the queued bytes; the echo comes back.
	if err := conns[0].SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := io.ReadFull(conns[0], buf[:5])
	if err != nil || string(buf[:n]) != "lost?" {
		t.Fatalf("after Restore: read %q, %v", buf[:n], err)
	}
	if err := s.Restore(ctx, 0); err == nil || !strings.Contains(err.Error(), "restore") {
		t.Errorf("Restore of a link not cut: %v; want an error", err)
	}
}

func echo(t *testing.T, c net.Conn, msg string, timeout time.Duration) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: got %q, %v; want %q", buf, err, msg)
	}
}

func TestStartStarRefusesSizes(t *testing.T) {
	for _, n := range []int{0, 251} {
		if _, err := lab.StartStar(context.Background(), n); err == nil {
			t.Errorf("StartStar(%d): no error", n)
		}
	}
}
