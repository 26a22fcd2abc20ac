package main

import (
	"bufio"
	"cmp"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	return withRequestLog(log, m, guard(st, cfg.AuthToken, mux))
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

func handlePut(log *slog.Logger, st *Store, maxValue int64, idle time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		o, err := putOptions(r)
		switch {
		case err != nil:
			writeError(w, 400, err.Error())
			return
		case r.ContentLength < 0: // chunked: S3 must be told the length before the value, and kv streams it
			writeError(w, 411, "send the value with a Content-Length (curl --data-binary and -T do)")
			return
		case r.ContentLength > maxValue:
			writeError(w, 413, fmt.Sprintf("value is larger than the limit of %d bytes", maxValue))
			return
		}
		body := &clientBody{r: r.Body, rc: http.NewResponseController(w), idle: idle}
		m, err := st.Put(r.Context(), r.PathValue("key"), body, r.ContentLength, o)
		switch berr := body.failure(); {
		case errors.Is(berr, os.ErrDeadlineExceeded):
			w.Header().Set("Connection", "close")
			writeError(w, 408, fmt.Sprintf("the request body stopped arriving for %s; nothing was stored", idle))
		case berr != nil:
			writeError(w, 400, "could not read the request body; nothing was stored")
		case err != nil:
			writeStoreError(log, w, r, err)
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
func putOptions(r *http.Request) (PutOptions, error) {
	o := PutOptions{ContentType: cmp.Or(r.Header.Get("Content-Type"), "application/octet-stream"),
		IfMatch: r.Header.Get("If-Match")}
	q, err := url.ParseQuery(r.URL.RawQuery)
	switch inm := r.Header.Get("If-None-Match"); {
	case len(o.ContentType) > 256 ||
		strings.ContainsFunc(o.ContentType, func(r rune) bool { return r < ' ' || r > '~' }):
		return o, errors.New("Content-Type must be at most 256 printable ASCII characters (S3 would alter it)")
	case inm != "" && strings.TrimSpace(inm) != "*":
		return o, errors.New("If-None-Match on PUT accepts only *")
	case inm != "" && o.IfMatch != "":
		return o, errors.New("use either If-Match or If-None-Match, not both")
	case err != nil:
		return o, errors.New("malformed query string")
	case q.Has("ttl"):
		o.TTL, err = parseTTL(q.Get("ttl"))
	}
	o.IfNoneMatch = r.Header.Get("If-None-Match") != ""
	return o, err
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

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// handleGet answers GET and HEAD of a value (or of one version of it), and GET ?versions with its history.
func handleGet(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, version, err := versionQuery(st, r)
		var m Meta
		var body io.ReadCloser
		switch {
		case err != nil:
			writeError(w, 400, err.Error())
			return
		case q.Has("versions") && r.Method == "GET":
			listVersions(log, st, w, r, q)
			return
		case r.Method == "HEAD": // never downloads the value
			m, err = st.Head(r.Context(), r.PathValue("key"), version)
		default:
			body, m, err = st.Get(r.Context(), r.PathValue("key"), version)
		}
		if err != nil {
			writeStoreError(log, w, r, err)
			return
		}
		if body != nil {
			defer body.Close()
		}
		vh, h := m.header, w.Header()
		if vh == nil {
			vh = valueHeader(m)
		}
		for k, v := range vh {
			h[k] = v
		}
		if body == nil || m.Size >= 2048 { // net/http writes a short body's length itself, and faster
			h["Content-Length"] = []string{strconv.FormatInt(m.Size, 10)}
		}
		if inm := header(r.Header, "If-None-Match"); inm != "" && etagMatch(inm, m.ETag, true) {
			w.WriteHeader(http.StatusNotModified)
		} else if w.WriteHeader(http.StatusOK); body != nil {
			// A pooled buffer, through the response's buffered writer: a small value leaves with its headers in
			// one write (io.Copy would allocate 32 KiB per response, net/http's ReadFrom too, and write apart).
			buf := copyBufs.Get().(*[]byte)
			defer copyBufs.Put(buf)
			if _, err := io.CopyBuffer(w, body, *buf); err != nil { // too late for a status: the short body says it
				log.Warn("value stream broken", "request_id", h.Get("X-Request-Id"), "err", err)
			}
		}
	}
}

func listVersions(log *slog.Logger, st *Store, w http.ResponseWriter, r *http.Request, q url.Values) {
	limit, after, err := pageQuery(q, func(c string) bool { return c == "" || token(c, 1024) })
	if err != nil {
		writeError(w, 400, err.Error())
		return
	}
	vs, next, err := st.Versions(r.Context(), r.PathValue("key"), after, limit)
	writePage(log, w, r, err, "versions", vs, next)
}

// valueHeader formats a value's response headers; a cached value keeps them.
func valueHeader(m Meta) http.Header {
	h := http.Header{
		"Content-Type":  {m.ContentType},
		"Etag":          {m.ETag},
		"Last-Modified": {m.LastModified.UTC().Format(http.TimeFormat)},
		"Cache-Control": {"no-cache"}, // a value can be replaced at any time: revalidate (cheap, by ETag)
	}
	if !m.ExpiresAt.IsZero() {
		h["Expires"] = []string{m.ExpiresAt.UTC().Format(http.TimeFormat)}
	}
	if m.Version != "" {
		h["X-Version-Id"] = []string{m.Version}
	}
	return h
}

// versionQuery parses the query and its version (empty: the current one). Version requests need a
// versioned bucket.
func versionQuery(st *Store, r *http.Request) (url.Values, string, error) {
	if r.URL.RawQuery == "" {
		return nil, "", nil // the common GET: nothing to parse (a nil url.Values answers Has with false)
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	switch {
	case err != nil:
		return q, "", errors.New("malformed query string")
	case !q.Has("version") && !q.Has("versions"):
		return q, "", nil
	case !st.versioned:
		return q, "", errors.New("versioning is off for this bucket: start kv with S3_VERSIONING=true")
	case q.Has("version") && !token(q.Get("version"), 1024):
		return q, "", errors.New("version must be a version id this service returned")
	}
	return q, q.Get("version"), nil
}

func handleDelete(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, version, err := versionQuery(st, r)
		if err == nil && q.Has("versions") {
			err = errors.New("DELETE takes ?version=<id>, not ?versions")
		}
		if err != nil {
			writeError(w, 400, err.Error())
		} else if err := st.Delete(r.Context(), r.PathValue("key"), version); err != nil {
			writeStoreError(log, w, r, err)
		} else {
			w.WriteHeader(http.StatusNoContent)
		}
	}
}

func handleList(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			err = errors.New("malformed query string")
		} else if err = checkKey(q.Get("prefix"), true); err != nil {
			err = errors.New("prefix: " + err.Error())
		}
		limit, cursor, perr := pageQuery(q,
			func(c string) bool { return utf8.ValidString(c) && len(c) <= maxObjectKey })
		if err = cmp.Or(err, perr); err != nil {
			writeError(w, 400, err.Error())
			return
		}
		keys, next, err := st.List(r.Context(), q.Get("prefix"), cursor, limit)
		writePage(log, w, r, err, "keys", keys, next)
	}
}

// pageQuery reads a listing's limit (default 100, at most 1000) and its opaque cursor.
func pageQuery(q url.Values, valid func(cursor string) bool) (limit int, cursor string, err error) {
	limit = 100
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 1000 {
			return 0, "", errors.New("limit must be a whole number from 1 to 1000")
		}
	}
	b, err := base64.RawURLEncoding.DecodeString(q.Get("cursor"))
	if err != nil || !valid(string(b)) {
		return 0, "", errors.New("cursor is not one this service returned")
	}
	return limit, string(b), nil
}

// writePage answers a listing: its items (never null) and, when more may follow, an opaque next_cursor.
func writePage[T any](log *slog.Logger, w http.ResponseWriter, r *http.Request, err error, name string, items []T,
	next string) {
	if err != nil {
		writeStoreError(log, w, r, err)
		return
	}
	page := map[string]any{name: append([]T{}, items...)}
	if next != "" {
		page["next_cursor"] = base64.RawURLEncoding.EncodeToString([]byte(next))
	}
	writeJSON(w, 200, page)
}

func handleReady(st *Store, stopping *atomic.Bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !st.ready.Load() || stopping.Load() {
			w.Header().Set("Retry-After", "1")
			writeError(w, 503, "not ready: starting or shutting down")
		} else if err := st.Ready(r.Context()); err != nil {
			w.Header().Set("Retry-After", "1")
			writeError(w, 503, "not ready: the bucket does not answer")
		} else {
			writeJSON(w, 200, map[string]string{"status": "ready"})
		}
	}
}

// guard holds back what may not reach a route: without the bearer token (when one is set; the health
// endpoints stay open, and the comparison takes the same time whatever the guess), /kv before the store is
// ready, and keys kv cannot store, which the mux would even answer with a redirect to another key when they
// hold empty, "." or ".." segments.
func guard(st *Store, token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key, isKey := strings.CutPrefix(r.URL.Path, "/kv/")
		switch open := r.URL.Path == "/healthz" || r.URL.Path == "/readyz"; {
		case token != "" && !open && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1:
			w.Header().Set("WWW-Authenticate", `Bearer realm="kv"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <AUTH_TOKEN>)")
		case (isKey || r.URL.Path == "/kv") && !st.ready.Load():
			w.Header().Set("Retry-After", "1")
			writeError(w, 503, "not ready: the bucket is being checked")
		case isKey && checkKey(key, false) != nil:
			writeError(w, 400, "key: "+checkKey(key, false).Error())
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// checkKey tells why key cannot name a value; a prefix may be partial (empty, or ending in a slash).
// It runs on every request, so it allocates nothing.
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
func writeStoreError(log *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, 404, "key not found")
	case errors.Is(err, ErrPrecondition):
		writeError(w, 412, "precondition failed: the key's current state does not match If-Match/If-None-Match")
	case errors.Is(err, ErrBadKey):
		writeError(w, 400, "key: rejected by the storage backend (MinIO allows 255 bytes between slashes, "+
			"254 in a key's last segment, each ! counting twice)")
	case errors.Is(err, ErrBadVersion):
		writeError(w, 400, "version must be a version id this service returned")
	case r.Context().Err() != nil:
		// The client went away: nobody reads an answer, and the access log shows 499.
	default:
		log.Error("storage unavailable", "request_id", w.Header().Get("X-Request-Id"), "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, 503, "storage unavailable, retry later")
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "request_id": w.Header().Get("X-Request-Id")})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// withRequestLog gives every request an ID (a sane incoming X-Request-ID is kept), echoes it, counts the
// request and writes one access line. Values, keys and headers other than the ID are never logged.
func withRequestLog(log *slog.Logger, m *metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Add(1)
		defer m.inFlight.Add(-1)
		id := header(r.Header, "X-Request-Id")
		if !token(id, 64) {
			id = strconv.FormatUint(rand.Uint64(), 36)
		}
		w.Header()["X-Request-Id"] = []string{id}
		rec := &recorder{ResponseWriter: w, id: id, method: r.Method}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = 499 // nothing written: the client closed the request
		}
		end := time.Now()
		rec.route, rec.took = r.Pattern, end.Sub(start)
		method := r.Method
		if !slices.Contains([]string{"GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"}, method) {
			method = "other" // methods are the client's choice: keep the label bounded
		}
		observe(&m.http, seriesKey{cmp.Or(r.Pattern, "unmatched"), method, rec.status}, rec.took)
		if log.Enabled(r.Context(), slog.LevelInfo) { // a record of our own: no caller lookup, no second clock read
			line := slog.NewRecord(end, slog.LevelInfo, "request", 0)
			line.AddAttrs(slog.Any("", rec))
			log.Handler().Handle(r.Context(), line)
		}
	})
}

// header is Header.Get for a canonical name, without Get's canonicalising: a cache hit reads two headers, and
// that costs 1.5 % of its instructions.
func header(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// token reports whether s is 1 to max printable ASCII characters without spaces (request and version ids).
func token(s string, max int) bool {
	return s != "" && len(s) <= max && !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' })
}

// recorder notes a response's status and size, and is the access line's one attribute: slog resolves it to
// the line's fields, which logBuffer writes without building them.
type recorder struct {
	http.ResponseWriter
	id, method, route string
	status            int
	bytes             int64
	took              time.Duration
}

func (r *recorder) ms() float64 { return float64(r.took.Microseconds()) / 1000 }

func (r *recorder) LogValue() slog.Value {
	return slog.GroupValue(slog.String("request_id", r.id), slog.String("method", r.method),
		slog.String("route", r.route), slog.Int("status", r.status), slog.Int64("bytes", r.bytes),
		slog.Float64("duration_ms", r.ms()))
}

func (r *recorder) WriteHeader(code int) {
	r.status = cmp.Or(r.status, code)
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	r.status = cmp.Or(r.status, 200)
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Latency buckets in seconds, for HTTP requests and S3 calls alike.
var buckets = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics holds what /metrics shows. A series is found through a sync.Map by its labels and counts with
// atomics, so the request path takes no lock once it exists. Labels are bounded: never a key.
type metrics struct {
	http, s3            sync.Map // seriesKey → *histogram
	inFlight, reclaimed atomic.Int64
	cache               *cache // nil when off
}

// seriesKey holds a series' label values: route, method and status code, or S3 operation and outcome.
type seriesKey struct {
	a, b string
	code int // 0 for S3
}

// histogram counts per bucket, not cumulatively: a scrape sums the buckets it reads, so +Inf and _count
// always agree and no bucket goes backwards.
type histogram struct {
	labels string
	counts [len(buckets) + 1]atomic.Int64 // the last is +Inf
	nanos  atomic.Int64
}

func observe(series *sync.Map, k seriesKey, d time.Duration) {
	v, ok := series.Load(k)
	if !ok {
		labels := fmt.Sprintf("operation=%q,outcome=%q", k.a, k.b)
		if k.code != 0 {
			labels = fmt.Sprintf("route=%q,method=%q,code=\"%d\"", k.a, k.b, k.code)
		}
		v, _ = series.LoadOrStore(k, &histogram{labels: labels})
	}
	h := v.(*histogram)
	i, _ := slices.BinarySearch(buckets[:], d.Seconds())
	h.counts[i].Add(1)
	h.nanos.Add(int64(d))
}

// ServeHTTP writes the Prometheus text format (0.0.4), families and series in a fixed order.
func (m *metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	b := bufio.NewWriter(w)
	defer b.Flush()
	writeHistograms(b, "http_request_duration_seconds", "HTTP requests: time to answer, by route, method, code.",
		&m.http)
	writeHistograms(b, "kv_s3_request_duration_seconds",
		"S3 requests (each attempt): time to response headers, by operation and outcome.", &m.s3)
	one := func(name, typ, help string, v any) {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	one("http_requests_in_flight", "gauge", "HTTP requests being answered now.", m.inFlight.Load())
	one("kv_ttl_reclaimed_total", "counter", "Expired values the TTL sweeper deleted.", m.reclaimed.Load())
	one("go_goroutines", "gauge", "Goroutines that currently exist.", runtime.NumGoroutine())
	if c := m.cache; c != nil {
		c.mu.Lock()
		bytes, items := c.used, c.ll.Len()
		c.mu.Unlock()
		one("kv_cache_bytes", "gauge", "Bytes of keys and values held in the cache.", bytes)
		one("kv_cache_items", "gauge", "Entries held in the cache.", items)
		one("kv_cache_hits_total", "counter", "GETs answered from the cache.", c.hits.Load())
		one("kv_cache_misses_total", "counter", "GETs the cache could not answer.", c.misses.Load())
		one("kv_cache_evictions_total", "counter", "Entries evicted to fit CACHE_MAX_BYTES.", c.evictions.Load())
	}
}

// writeHistograms writes a family of histograms, each from one reading of its buckets.
func writeHistograms(w io.Writer, name, help string, series *sync.Map) {
	var hs []*histogram
	series.Range(func(_, v any) bool { hs = append(hs, v.(*histogram)); return true })
	slices.SortFunc(hs, func(a, b *histogram) int { return strings.Compare(a.labels, b.labels) })
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	for _, h := range hs {
		var total int64
		for i, le := range buckets {
			total += h.counts[i].Load()
			fmt.Fprintf(w, "%s_bucket{%s,le=\"%g\"} %d\n", name, h.labels, le, total)
		}
		total += h.counts[len(buckets)].Load()
		fmt.Fprintf(w, "%s_bucket{%s,le=\"+Inf\"} %d\n%s_sum{%s} %g\n%s_count{%s} %d\n", name, h.labels, total,
			name, h.labels, time.Duration(h.nanos.Load()).Seconds(), name, h.labels, total)
	}
}
