//go:build !linux

package lab

import (
	"errors"
	"fmt"
	"os"
)

var errUnsupported = fmt.Errorf("the lab needs Linux network namespaces and TUN devices: %w", errors.ErrUnsupported)

func joinNamespace(string) error { return errUnsupported }

func openTUN(string) (*os.File, error) { return nil, errUnsupported }
