package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// Latency buckets in seconds, for HTTP requests and S3 calls alike.
var buckets = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics counts with atomics in series found through sync.Maps, so the request path takes no lock once
// a series exists; labels are bounded (route pattern, method, status, S3 operation and outcome).
type metrics struct {
	start     time.Time
	inFlight  atomic.Int64
	http      sync.Map // httpLabels → *histogram
	s3Calls   sync.Map // s3Labels → *atomic.Int64
	s3Latency sync.Map // operation → *histogram
	reclaimed atomic.Int64
	cache     *cache // nil when off
}

type httpLabels struct {
	route, method string
	code          int
}

type s3Labels struct{ op, outcome string }

type histogram struct {
	counts [len(buckets) + 1]atomic.Int64 // per bucket, not cumulative; the last is +Inf
	count  atomic.Int64
	nanos  atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	i, _ := slices.BinarySearch(buckets[:], d.Seconds())
	h.counts[i].Add(1)
	h.count.Add(1)
	h.nanos.Add(int64(d))
}

func newMetrics(c *cache) *metrics { return &metrics{start: time.Now(), cache: c} }

// series returns the value stored under k in m, creating it on first use.
func series[K comparable, V any](m *sync.Map, k K) *V {
	if v, ok := m.Load(k); ok {
		return v.(*V)
	}
	v, _ := m.LoadOrStore(k, new(V))
	return v.(*V)
}

var knownMethods = []string{"GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"}

func (m *metrics) observeHTTP(route, method string, code int, d time.Duration) {
	if !slices.Contains(knownMethods, method) {
		method = "other" // methods are client-chosen: keep the label bounded
	}
	series[httpLabels, histogram](&m.http, httpLabels{cmp.Or(route, "unmatched"), method, code}).observe(d)
}

// s3Middleware times every S3 call the SDK makes (retries included) by operation and outcome.
func (m *metrics) s3Middleware(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("kvMetrics",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (
			middleware.InitializeOutput, middleware.Metadata, error) {
			start := time.Now()
			out, md, err := next.HandleInitialize(ctx, in)
			op := awsmiddleware.GetOperationName(ctx)
			series[string, histogram](&m.s3Latency, op).observe(time.Since(start))
			series[s3Labels, atomic.Int64](&m.s3Calls, s3Labels{op, outcome(err)}).Add(1)
			return out, md, err
		}), middleware.Before)
}

func outcome(err error) string {
	switch err = classify(err); {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrPrecondition):
		return "precondition_failed"
	}
	return "error"
}

// ServeHTTP writes the Prometheus text exposition format, families and series in a fixed order.
func (m *metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	b := bufio.NewWriter(w)
	defer b.Flush()

	https := sortedKeys(&m.http, func(a, b httpLabels) int {
		return cmp.Or(strings.Compare(a.route, b.route), strings.Compare(a.method, b.method), a.code-b.code)
	})
	family(b, "http_requests_total", "counter", "HTTP requests answered, by route pattern, method and status code.")
	for _, k := range https {
		h := series[httpLabels, histogram](&m.http, k)
		fmt.Fprintf(b, "http_requests_total{%s} %d\n", httpLabelText(k), h.count.Load())
	}
	family(b, "http_request_duration_seconds", "histogram", "Time to answer HTTP requests, by route pattern, method and status code.")
	for _, k := range https {
		writeHistogram(b, "http_request_duration_seconds", httpLabelText(k), series[httpLabels, histogram](&m.http, k))
	}
	family(b, "http_requests_in_flight", "gauge", "HTTP requests being answered now.")
	fmt.Fprintf(b, "http_requests_in_flight %d\n", m.inFlight.Load())

	family(b, "kv_s3_requests_total", "counter", "S3 calls, by operation and outcome (ok, not_found, precondition_failed, error).")
	for _, k := range sortedKeys(&m.s3Calls, func(a, b s3Labels) int {
		return cmp.Or(strings.Compare(a.op, b.op), strings.Compare(a.outcome, b.outcome))
	}) {
		fmt.Fprintf(b, "kv_s3_requests_total{operation=%s,outcome=%s} %d\n", labelValue(k.op), labelValue(k.outcome),
			series[s3Labels, atomic.Int64](&m.s3Calls, k).Load())
	}
	family(b, "kv_s3_request_duration_seconds", "histogram", "Time S3 calls take until their response headers, retries included, by operation.")
	for _, op := range sortedKeys(&m.s3Latency, strings.Compare) {
		writeHistogram(b, "kv_s3_request_duration_seconds", "operation="+labelValue(op), series[string, histogram](&m.s3Latency, op))
	}

	var hits, misses, evictions, bytes int64
	var items int
	if c := m.cache; c != nil {
		hits, misses, evictions = c.hits.Load(), c.misses.Load(), c.evictions.Load()
		bytes, items = c.stats()
	}
	for _, s := range []struct {
		name, typ, help string
		v               int64
	}{
		{"kv_cache_hits_total", "counter", "GETs answered from the cache.", hits},
		{"kv_cache_misses_total", "counter", "GETs the cache could not answer.", misses},
		{"kv_cache_evictions_total", "counter", "Entries evicted to stay within CACHE_MAX_BYTES.", evictions},
		{"kv_cache_bytes", "gauge", "Bytes of keys and values held in the cache.", bytes},
		{"kv_cache_items", "gauge", "Entries held in the cache.", int64(items)},
		{"kv_ttl_reclaimed_total", "counter", "Expired values deleted from the bucket by the TTL sweeper.", m.reclaimed.Load()},
		{"go_goroutines", "gauge", "Goroutines that currently exist.", int64(runtime.NumGoroutine())},
	} {
		family(b, s.name, s.typ, s.help)
		fmt.Fprintf(b, "%s %d\n", s.name, s.v)
	}
	family(b, "process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.")
	fmt.Fprintf(b, "process_start_time_seconds %.3f\n", float64(m.start.UnixMilli())/1000)
	family(b, "kv_build_info", "gauge", "Always 1; the labels say which build is running.")
	fmt.Fprintf(b, "kv_build_info{version=%s,goversion=%s} 1\n", labelValue(buildVersion()), labelValue(runtime.Version()))
}

func family(w io.Writer, name, typ, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

func writeHistogram(w io.Writer, name, labels string, h *histogram) {
	var cum int64
	for i, le := range buckets {
		cum += h.counts[i].Load()
		fmt.Fprintf(w, "%s_bucket{%s,le=\"%g\"} %d\n", name, labels, le, cum)
	}
	count := h.count.Load()
	fmt.Fprintf(w, "%s_bucket{%s,le=\"+Inf\"} %d\n", name, labels, count)
	fmt.Fprintf(w, "%s_sum{%s} %g\n%s_count{%s} %d\n", name, labels, time.Duration(h.nanos.Load()).Seconds(), name, labels, count)
}

func httpLabelText(k httpLabels) string {
	return fmt.Sprintf("route=%s,method=%s,code=\"%d\"", labelValue(k.route), labelValue(k.method), k.code)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// labelValue quotes a label value as the exposition format wants: only \, " and newline are escaped.
func labelValue(s string) string { return `"` + labelEscaper.Replace(s) + `"` }

func sortedKeys[K comparable](m *sync.Map, compare func(a, b K) int) []K {
	var keys []K
	m.Range(func(k, _ any) bool { keys = append(keys, k.(K)); return true })
	slices.SortFunc(keys, compare)
	return keys
}

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Main.Version
	}
	return "unknown"
}
