package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

const maxTTL = 365 * 24 * time.Hour

// newServer registers every route and wraps them in the middleware every request passes.
func newServer(log *slog.Logger, st *Store, m *metrics, cfg config, stopping *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /kv/{key...}", handlePut(log, st, cfg.MaxValueBytes, cfg.ClientTimeout))
	mux.HandleFunc("GET /kv/{key...}", handleGet(log, st)) // HEAD too
	mux.HandleFunc("DELETE /kv/{key...}", handleDelete(log, st))
	mux.HandleFunc("GET /kv", handleList(log, st))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", handleReady(st, stopping))
	mux.Handle("GET /metrics", m)
	mux.HandleFunc("/kv", notFound) // else the mux redirects /kv to /kv/ for methods GET /kv does not take
	mux.HandleFunc("/", notFound)
	return withRequestLog(log, m, cfg.ClientTimeout, guard(cfg.AuthToken, mux))
}

// notFound answers what no route took: a known path with another method (405, with Allow), or no such path.
func notFound(w http.ResponseWriter, r *http.Request) {
	allow := "GET, HEAD"
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, "/kv/"):
		allow = "GET, HEAD, PUT, DELETE"
	case p != "/kv" && p != "/healthz" && p != "/readyz" && p != "/metrics":
		writeError(w, 404, "no such endpoint")
		return
	}
	w.Header().Set("Allow", allow)
	writeError(w, 405, "method "+r.Method+" is not allowed here; allowed: "+allow)
}

// storeContext is a request's context for its work with S3, which the client's connection never cancels
// (each S3 call is bounded by S3_TIMEOUT): net/http cancels a request's context when the client half-closes,
// or when a read deadline passes after the body, and a request that has arrived is carried out and answered.
func storeContext(r *http.Request) context.Context { return context.WithoutCancel(r.Context()) }

func handlePut(log *slog.Logger, st *Store, maxValue int64, idle time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		o, err := putOptions(st, r)
		switch {
		case err != nil:
			writeError(w, 400, err.Error())
			return
		case r.ContentLength < 0: // chunked: S3 must be told the length before the value, and kv streams it
			writeError(w, 411, "send the value with a Content-Length: curl sends one with --data-binary @file "+
				"(@- for stdin) or -T file, but not with -T -")
			return
		case r.ContentLength > maxValue:
			writeError(w, 413, fmt.Sprintf("value is larger than the limit of %d bytes", maxValue))
			return
		}
		body := &clientBody{r: r.Body, rc: http.NewResponseController(w), idle: idle}
		m, err := st.Put(storeContext(r), r.PathValue("key"), body, r.ContentLength, o)
		berr := body.failure()
		switch {
		case errors.Is(berr, os.ErrDeadlineExceeded):
			w.Header().Set("Connection", "close")
			writeError(w, 408, fmt.Sprintf("the request body stopped arriving for %s; nothing was stored", idle))
		case berr != nil:
			writeError(w, 400, "could not read the request body; nothing was stored")
		case err != nil:
			writeStoreError(log, w, err)
		default:
			w.Header().Set("ETag", m.ETag)
			writeJSON(w, 200, struct {
				Key string `json:"key"`
				Meta
			}{r.PathValue("key"), m})
		}
	}
}

// clientBody reads a request body, giving the client at most idle for its next bytes, and keeps the first
// read error, so that a client's failure is told apart from the storage's.
type clientBody struct {
	r    io.Reader
	rc   *http.ResponseController
	idle time.Duration
	err  atomic.Pointer[error] // set from the S3 client's goroutine
}

func (b *clientBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.idle)) // unsupported (httptest): the server's ReadTimeout bounds it
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (b *clientBody) failure() error {
	if p := b.err.Load(); p != nil {
		return *p
	}
	return nil
}

// putOptions reads a PUT's content type, preconditions and ttl.
func putOptions(st *Store, r *http.Request) (PutOptions, error) {
	q, _, err := query(st, r, "ttl")
	o := PutOptions{ContentType: r.Header.Get("Content-Type"), IfMatch: r.Header.Get("If-Match"),
		IfNoneMatch: r.Header.Get("If-None-Match") != ""}
	switch {
	case err != nil:
		return o, err
	case o.ContentType == "" || o.ContentType == "application/x-www-form-urlencoded": // curl's default: no type
		o.ContentType = "application/octet-stream"
	case len(o.ContentType) > 256 ||
		strings.ContainsFunc(o.ContentType, func(r rune) bool { return r < ' ' || r > '~' }):
		return o, errors.New("Content-Type must be at most 256 printable ASCII characters (S3 would alter it)")
	}
	switch {
	case o.IfNoneMatch && strings.TrimSpace(r.Header.Get("If-None-Match")) != "*":
		return o, errors.New("If-None-Match on PUT accepts only *")
	case o.IfNoneMatch && o.IfMatch != "":
		return o, errors.New("use either If-Match or If-None-Match, not both")
	case q.Has("ttl"):
		o.TTL, err = parseTTL(q.Get("ttl"))
	}
	return o, err
}

// query parses r's query. It refuses a parameter the route does not take (a typo, tll for ttl, must not pass
// for a plain request), and a version request where the bucket keeps no versions; version is the version
// named, or "" for the current one.
func query(st *Store, r *http.Request, known ...string) (q url.Values, version string, err error) {
	if r.URL.RawQuery == "" {
		return nil, "", nil // nothing to parse (a nil url.Values answers Has and Get)
	}
	q, err = url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, "", errors.New("malformed query string")
	}
	for name := range q {
		if !slices.Contains(known, name) {
			takes := strings.Join(known, ", ")
			return nil, "", fmt.Errorf("unknown query parameter %q; this request takes %s", name, takes)
		}
	}
	switch {
	case (q.Has("version") || q.Has("versions")) && !st.versioned:
		return nil, "", errors.New("versioning is off for this bucket: start kv with S3_VERSIONING=true")
	case q.Has("version") && !token(q.Get("version"), 1024):
		return nil, "", errors.New("version must be a version id this service returned")
	}
	return q, q.Get("version"), nil
}

// parseTTL accepts a Go duration (30s, 5m, 1h30m) or whole seconds, from 1s to maxTTL.
func parseTTL(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if n, nerr := strconv.ParseInt(s, 10, 64); nerr == nil {
		d, err = time.Duration(min(n, int64(maxTTL/time.Second)+1))*time.Second, nil
	}
	if err != nil || d < time.Second || d > maxTTL {
		return 0, fmt.Errorf("ttl must be a duration such as 30s, 5m or 1h30m, or whole seconds, from 1s to %s", maxTTL)
	}
	return d, nil
}

// handleGet answers GET and HEAD of a value (or of one version of it), and GET ?versions with its history.
func handleGet(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, version, err := query(st, r, "version", "versions", "limit", "cursor")
		var m Meta
		var body io.ReadCloser
		switch {
		case err != nil:
			writeError(w, 400, err.Error())
			return
		case q.Has("versions"):
			limit, after, err := pageQuery(q, func(c string) bool { return token(c, 1024) })
			if err != nil {
				writeError(w, 400, err.Error())
				return
			}
			vs, next, err := st.Versions(storeContext(r), r.PathValue("key"), after, limit)
			writePage(log, w, err, "versions", vs, next)
			return
		case r.Method == "HEAD": // never downloads the value
			m, err = st.Head(storeContext(r), r.PathValue("key"), version)
		default:
			body, m, err = st.Get(storeContext(r), r.PathValue("key"), version)
		}
		if err != nil {
			writeStoreError(log, w, err)
			return
		}
		if body != nil {
			defer body.Close()
		}
		h := m.header
		if h == nil {
			h = valueHeader(m)
		}
		maps.Copy(w.Header(), h)
		if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, m.ETag, true) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.WriteHeader(http.StatusOK)
		if body == nil {
			return
		}
		if _, err := io.Copy(w, body); err != nil { // too late for a status: the short body says it
			log.Warn("value stream broken", "request_id", w.Header().Get("X-Request-Id"), "err", err)
		}
	}
}

// valueHeader formats a value's response headers; a cached value keeps them.
func valueHeader(m Meta) http.Header {
	h := http.Header{
		"Content-Type":   {m.ContentType},
		"Content-Length": {strconv.FormatInt(m.Size, 10)},
		"Etag":           {m.ETag},
		"Last-Modified":  {m.LastModified.UTC().Format(http.TimeFormat)},
		"Cache-Control":  {"no-cache"}, // a value can be replaced at any time: revalidate (cheap, by ETag)
	}
	if !m.ExpiresAt.IsZero() {
		h.Set("Expires", m.ExpiresAt.UTC().Format(http.TimeFormat))
	}
	if m.Version != "" {
		h.Set("X-Version-Id", m.Version)
	}
	return h
}

func handleDelete(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, version, err := query(st, r, "version")
		ifMatch := r.Header.Get("If-Match")
		if err == nil && version != "" && ifMatch != "" {
			err = errors.New("If-Match applies to the current value; DELETE ?version= removes that version as it is")
		}
		if err != nil {
			writeError(w, 400, err.Error())
			return
		}
		if err := st.Delete(storeContext(r), r.PathValue("key"), version, ifMatch); err != nil {
			writeStoreError(log, w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func handleList(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, _, err := query(st, r, "prefix", "limit", "cursor")
		prefix := q.Get("prefix")
		if err == nil && checkKey(prefix, true) != nil {
			err = errors.New("prefix: " + checkKey(prefix, true).Error())
		}
		// A cursor is the name of an object under the prefix (see List): it must read as a key would.
		validCursor := func(c string) bool {
			return checkKey(c, false) == nil && strings.HasPrefix(c, objectPath(prefix, true))
		}
		limit, after, perr := pageQuery(q, validCursor)
		err = cmp.Or(err, perr)
		if err != nil {
			writeError(w, 400, err.Error())
			return
		}
		keys, next, err := st.List(storeContext(r), prefix, after, limit)
		writePage(log, w, err, "keys", keys, next)
	}
}

// pageQuery reads a listing's limit (default 100, at most 1000) and its opaque cursor ("" for the start).
func pageQuery(q url.Values, valid func(cursor string) bool) (limit int, cursor string, err error) {
	limit = 100
	if s := q.Get("limit"); s != "" {
		limit, err = strconv.Atoi(s)
	}
	if err != nil || limit < 1 || limit > 1000 {
		return 0, "", errors.New("limit must be a whole number from 1 to 1000")
	}
	b, err := base64.RawURLEncoding.DecodeString(q.Get("cursor"))
	if err != nil || len(b) > 0 && !valid(string(b)) {
		return 0, "", errors.New("cursor is not one this service returned for this listing")
	}
	return limit, string(b), nil
}

// writePage answers a listing: its items (never null) and, when more may follow, an opaque next_cursor.
func writePage[T any](log *slog.Logger, w http.ResponseWriter, err error, name string, items []T, next string) {
	if err != nil {
		writeStoreError(log, w, err)
		return
	}
	page := map[string]any{name: append([]T{}, items...)}
	if next != "" {
		page["next_cursor"] = base64.RawURLEncoding.EncodeToString([]byte(next))
	}
	writeJSON(w, 200, page)
}

// handleReady asks S3 at most once a second, however often it is called: it needs no token, and a flood of
// probes must not become a flood of HeadBucket calls.
func handleReady(st *Store, stopping *atomic.Bool) http.HandlerFunc {
	var mu sync.Mutex
	var checked time.Time
	var last error
	return func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if time.Since(checked) >= time.Second {
			last = st.Ready(storeContext(r))
			checked = time.Now()
		}
		err := last
		mu.Unlock()
		switch {
		case stopping.Load():
			writeError(w, 503, "not ready: shutting down")
		case err != nil:
			writeError(w, 503, "not ready: the bucket does not answer")
		default:
			writeJSON(w, 200, map[string]string{"status": "ready"})
		}
	}
}

// guard holds back what may not reach a route: without the bearer token (when one is set; the health
// endpoints stay open, and the comparison takes the same time whatever the guess), and keys kv cannot store,
// which the mux would even answer with a redirect to another key when they hold empty, "." or ".." segments.
func guard(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, isKey := strings.CutPrefix(r.URL.Path, "/kv/")
		open := r.URL.Path == "/healthz" || r.URL.Path == "/readyz"
		switch {
		case token != "" && !open && !bearer(r.Header.Get("Authorization"), token):
			w.Header().Set("WWW-Authenticate", `Bearer realm="kv"`)
			writeError(w, 401, "missing or wrong bearer token (Authorization: Bearer <AUTH_TOKEN>)")
		case isKey && checkKey(key, false) != nil:
			writeError(w, 400, "key: "+checkKey(key, false).Error())
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// bearer reports whether an Authorization header carries token; the scheme is case-insensitive (RFC 9110
// §11.1).
func bearer(header, token string) bool {
	scheme, credentials, _ := strings.Cut(header, " ")
	return strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(credentials), []byte(token)) == 1
}

// checkKey tells why key cannot name a value; a prefix may be partial (empty, or ending in a slash).
func checkKey(key string, prefix bool) error {
	if key == "" && !prefix {
		return errors.New("is empty")
	}
	if !utf8.ValidString(key) {
		return errors.New("is not valid UTF-8")
	}
	for seg, rest, more := "", key, true; more; {
		seg, rest, more = strings.Cut(rest, "/")
		switch {
		case strings.ContainsFunc(seg, unicode.IsControl):
			return errors.New("contains a control character")
		case (seg == "" || seg == "." || seg == "..") && (more || !prefix):
			return errors.New(`has an empty, "." or ".." path segment (no leading, trailing or double slash)`)
		}
	}
	// The longest object name kv makes for a key is its TTL index entry: see indexKey and objectPath.
	if len(indexPrefix)+indexWidth+1+len(key)+strings.Count(key, "!")+1 > maxObjectKey {
		return fmt.Errorf("is too long for S3's %d-byte object names (keys up to %d bytes always fit)",
			maxObjectKey, maxObjectKey-15)
	}
	return nil
}

// writeStoreError maps every store error to its status, in one place. Only a storage failure is logged, with
// its cause (which names the S3 operation, never the key).
func writeStoreError(log *slog.Logger, w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, 404, "key not found")
	case errors.Is(err, ErrPrecondition):
		writeError(w, 412, "precondition failed: the key's current state does not match If-Match/If-None-Match")
	case errors.Is(err, ErrBadKey):
		writeError(w, 400, "key: the storage backend refuses this name (MinIO and file-system gateways allow "+
			"255 bytes between slashes, 254 in a key's last segment, each ! counting twice)")
	case errors.Is(err, ErrBadVersion):
		writeError(w, 400, "version must be a version id this service returned")
	default:
		log.Error("storage unavailable", "request_id", w.Header().Get("X-Request-Id"), "err", err)
		writeError(w, 503, "storage unavailable, retry later")
	}
}

// writeError answers with a JSON error; a 503 (S3 down, or kv not ready) says when to try again.
func writeError(w http.ResponseWriter, status int, msg string) {
	if status == 503 {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, map[string]string{"error": msg, "request_id": w.Header().Get("X-Request-Id")})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // read as written: <AUTH_TOKEN>, not \u003cAUTH_TOKEN\u003e
	enc.Encode(v)
}

// withRequestLog gives every request an ID (a sane incoming X-Request-ID is kept), echoes it, counts the
// request and writes one access line with the status sent. Values, keys and other headers are never logged.
func withRequestLog(log *slog.Logger, m *metrics, idle time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Add(1)
		defer m.inFlight.Add(-1)
		id := r.Header.Get("X-Request-Id")
		if !token(id, 64) {
			id = strconv.FormatUint(rand.Uint64(), 36)
		}
		w.Header().Set("X-Request-Id", id)
		rec := &recorder{ResponseWriter: w, rc: http.NewResponseController(w), idle: idle}
		next.ServeHTTP(rec, r)
		status := cmp.Or(rec.status, 200) // a handler that wrote nothing: net/http sends 200
		end := time.Now()
		took := end.Sub(start)
		method := r.Method
		if !slices.Contains([]string{"GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"}, method) {
			method = "other" // methods are the client's choice: keep the label bounded
		}
		m.observe(m.http, series{cmp.Or(r.Pattern, "unmatched"), method, status}, took)
		if log.Enabled(r.Context(), slog.LevelInfo) { // a record of kv's own spares slog a stack walk per line
			line := slog.NewRecord(end, slog.LevelInfo, "request", 0)
			line.AddAttrs(slog.String("request_id", id), slog.String("method", r.Method),
				slog.String("route", r.Pattern), slog.Int("status", status), slog.Int64("bytes", rec.bytes),
				slog.Int64("duration_us", took.Microseconds())) // slog writes a float through encoding/json
			log.Handler().Handle(r.Context(), line)
		}
	})
}

// token reports whether s is 1 to max printable ASCII characters without spaces (request and version ids).
func token(s string, max int) bool {
	return s != "" && len(s) <= max && !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' })
}

// recorder notes a response's status and size. A client that stops reading cannot hold a handler: the
// server's WriteTimeout gives a response idle from its request's start, and the deadline moves on as the
// answer begins and with each write after the first.
type recorder struct {
	http.ResponseWriter
	rc     *http.ResponseController
	idle   time.Duration
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	r.status = cmp.Or(r.status, code)
	r.rc.SetWriteDeadline(time.Now().Add(r.idle)) // unsupported (httptest): nothing to bound
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(200)
	} else if r.bytes > 0 {
		r.rc.SetWriteDeadline(time.Now().Add(r.idle))
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Latency buckets in seconds, for HTTP requests and S3 calls alike.
var buckets = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics holds what /metrics shows; one mutex guards the histograms. Labels are bounded: never a key.
type metrics struct {
	mu                  sync.Mutex
	http, s3            map[series]*histogram
	inFlight, reclaimed atomic.Int64
	cache               *cache // nil when off
}

// series holds a histogram's label values: route, method and status code, or S3 operation and status code.
type series struct {
	a, b string
	code int
}

type histogram struct {
	counts [len(buckets) + 1]int64 // per bucket, not cumulative; the last is +Inf
	sum    time.Duration
}

func newMetrics(c *cache) *metrics {
	return &metrics{http: map[series]*histogram{}, s3: map[series]*histogram{}, cache: c}
}

// observe counts d in family's histogram of s.
func (m *metrics) observe(family map[series]*histogram, s series, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := family[s]
	if h == nil {
		h = &histogram{}
		family[s] = h
	}
	i, _ := slices.BinarySearch(buckets[:], d.Seconds())
	h.counts[i]++
	h.sum += d
}

// ServeHTTP writes the Prometheus text format (0.0.4), families and series in a fixed order.
func (m *metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	b := bufio.NewWriter(w)
	defer b.Flush()
	m.mu.Lock()
	writeHistograms(b, "http_request_duration_seconds", "HTTP requests: time to answer, by route, method, code.",
		m.http)
	writeHistograms(b, "kv_s3_request_duration_seconds",
		"S3 requests (each attempt): time to response headers, by operation and S3's code (0: no answer).", m.s3)
	m.mu.Unlock()
	one := func(name, typ, help string, v any) {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	one("http_requests_in_flight", "gauge", "HTTP requests being answered now.", m.inFlight.Load())
	one("kv_ttl_reclaimed_total", "counter", "Expired values the TTL sweeper deleted.", m.reclaimed.Load())
	one("go_goroutines", "gauge", "Goroutines that currently exist.", runtime.NumGoroutine())
	if c := m.cache; c != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		one("kv_cache_bytes", "gauge", "Bytes of keys and values held in the cache.", c.used)
		one("kv_cache_items", "gauge", "Entries held in the cache.", c.ll.Len())
		one("kv_cache_hits_total", "counter", "GETs answered from the cache.", c.hits)
		one("kv_cache_misses_total", "counter", "GETs the cache could not answer.", c.misses)
		one("kv_cache_evictions_total", "counter", "Entries evicted to fit CACHE_MAX_BYTES.", c.evictions)
	}
}

// writeHistograms writes one family of histograms, its series in the order of their labels.
func writeHistograms(w io.Writer, name, help string, family map[series]*histogram) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	keys := slices.SortedFunc(maps.Keys(family), func(a, b series) int {
		return cmp.Or(cmp.Compare(a.a, b.a), cmp.Compare(a.b, b.b), cmp.Compare(a.code, b.code))
	})
	for _, s := range keys {
		h := family[s]
		labels := fmt.Sprintf("route=%q,method=%q,code=\"%d\"", s.a, s.b, s.code)
		if s.b == "" { // S3 calls have no method
			labels = fmt.Sprintf("operation=%q,code=\"%d\"", s.a, s.code)
		}
		var total int64
		for i, le := range buckets {
			total += h.counts[i]
			fmt.Fprintf(w, "%s_bucket{%s,le=\"%g\"} %d\n", name, labels, le, total)
		}
		total += h.counts[len(buckets)]
		fmt.Fprintf(w, "%s_bucket{%s,le=\"+Inf\"} %d\n", name, labels, total)
		fmt.Fprintf(w, "%s_sum{%s} %g\n%s_count{%s} %d\n", name, labels, h.sum.Seconds(), name, labels, total)
	}
}
