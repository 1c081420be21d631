//go:build !unix

package worker

func openFileLimit() uint64 { return 0 }
