package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/pingfleet/pingfleet/exporter"
)

// serveMetrics serves reg on addr at /metrics until ctx ends.
func (a *app) serveMetrics(ctx context.Context, g *errgroup.Group, addr string, reg *prometheus.Registry) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return systemErr(fmt.Errorf("metrics: listen on %s: %w", addr, err))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", exporter.Handler(reg))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	a.logger.Info("serving metrics", "addr", l.Addr().String())
	g.Go(func() error {
		if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	})
	return nil
}
