package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"time"

	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/health"
	"github.com/reconciler-dev/reconciler/internal/runner"
)

// health measures how long a health check takes to refuse an app that
// answers a deterministic 500, with the defaults (timeout 30s, interval 1s,
// failures 3), against the old behaviour measured in the same run: retried
// every interval until the timeout. -quick shortens the baseline's timeout
// to 5s (it would be 30s).
func (b *bench) health() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
	}))
	defer srv.Close()
	k := &health.Checker{Runner: &runner.Runner{}, Dir: b.dir}
	c := desired.Check{Kind: desired.CheckHTTP, Target: srv.URL + "/health", Timeout: desired.DefaultCheckTimeout,
		Interval: desired.DefaultCheckInterval, Failures: desired.DefaultCheckFailures}
	measure := func(c desired.Check) (time.Duration, int) {
		start := time.Now()
		err := k.Run(context.Background(), c)
		he, _ := err.(*health.Error)
		if he == nil {
			check(fmt.Errorf("health check of a 500 passed: %v", err))
		}
		return time.Since(start), he.Attempts
	}
	var ds []time.Duration
	attempts := 0
	for i := 0; i < b.runs; i++ {
		d, n := measure(c)
		ds, attempts = append(ds, d), n
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	old := c
	old.Failures = 1 << 30 // never early: every attempt until the timeout
	if b.runs < 20 {
		old.Timeout = 5 * time.Second
	}
	base, baseAttempts := measure(old)
	fmt.Printf("health check refuses a 500:             %9s   baseline retried until timeout %s (%s, %d attempts)   (target <= 1 s: %s)\n",
		ms(ds[len(ds)/2]), ms(base), old.Timeout, baseAttempts, verdict(ds[len(ds)/2] <= time.Second))
	fmt.Printf("  (%d attempts each; first at once, then 50 ms doubling up to the interval)\n", attempts)
}
