//go:build !unix

package localredis

import (
	"errors"
	"io"
	"time"
)

const maxSocketPath = 0

type child struct{ exited chan struct{} }

func (c *child) stop(time.Duration) error { return nil }

// startChild refuses: redis-server has no supported Windows build, so the
// private Redis is miniredis there.
func startChild(string, []string, io.Writer) (*child, error) {
	return nil, errors.New("a private redis-server is not supported on this system; use --embedded miniredis")
}
