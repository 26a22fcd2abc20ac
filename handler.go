package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
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
func newServer(log *slog.Logger, st *Store, m *metrics, cfg config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /kv/{key...}", handlePut(log, st, cfg.MaxValueBytes, cfg.ClientTimeout))
	mux.HandleFunc("GET /kv/{key...}", handleGet(log, st)) // HEAD too
	mux.HandleFunc("DELETE /kv/{key...}", handleDelete(log, st))
	mux.HandleFunc("GET /kv", handleList(log, st))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", handleReady(log, st))
	mux.Handle("GET /metrics", m)
	// What the routes above do not take, in JSON: another method on their paths (405, saying which they take;
	// else the mux would redirect /kv to /kv/), or another path.
	for path, allow := range map[string]string{"/kv/{key...}": "GET, HEAD, PUT, DELETE", "/kv": "GET, HEAD",
		"/healthz": "GET, HEAD", "/readyz": "GET, HEAD", "/metrics": "GET, HEAD"} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, 405, "method "+r.Method+" is not allowed here; allowed: "+allow)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { writeError(w, 404, "no such endpoint") })
	return withRequestLog(log, m, cfg.ClientTimeout, guard(cfg.AuthToken, mux))
}

// storeContext is a request's context for its work with S3, which the client's connection never cancels
// (each S3 call is bounded by S3_TIMEOUT): net/http cancels a request's context when the client half-closes,
// or when a read deadline passes after the body, and a request that has arrived is carried out and answered.
func storeContext(r *http.Request) context.Context { return context.WithoutCancel(r.Context()) }

func handlePut(log *slog.Logger, st *Store, maxValue int64, idle time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		o, status, err := putOptions(st, r, maxValue)
		if err != nil {
			writeError(w, status, err.Error())
			return
		}
		body := &clientBody{r: r.Body, rc: http.NewResponseController(w), idle: idle}
		m, err := st.Put(storeContext(r), r.PathValue("key"), body, r.ContentLength, o)
		berr := body.err.Load()
		switch {
		case berr != nil && errors.Is(*berr, os.ErrDeadlineExceeded):
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
	// Unsupported (httptest): the server's timeouts bound it. The first Read of a body sent with "Expect:
	// 100-continue" writes "100 Continue", perhaps after S3 work that outlasted the write deadline.
	b.rc.SetReadDeadline(time.Now().Add(b.idle))
	b.rc.SetWriteDeadline(time.Now().Add(b.idle))
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

// putOptions reads a PUT's content type, preconditions and ttl, and refuses, with its status, what kv cannot
// store.
func putOptions(st *Store, r *http.Request, maxValue int64) (PutOptions, int, error) {
	q, _, err := query(st, r, "ttl")
	o := PutOptions{ContentType: r.Header.Get("Content-Type"), Condition: condition(r)}
	switch {
	case err != nil:
		return o, 400, err
	case r.ContentLength < 0: // chunked: S3 must be told the length before the value, and kv streams it
		return o, 411, errors.New("send the value with a Content-Length (curl: --data-binary @file or @-, not -T -)")
	case r.ContentLength > maxValue:
		return o, 413, fmt.Errorf("value is larger than the limit of %d bytes", maxValue)
	case o.ContentType == "" || o.ContentType == "application/x-www-form-urlencoded": // curl's default: no type
		o.ContentType = "application/octet-stream"
	case len(o.ContentType) > 256 ||
		strings.ContainsFunc(o.ContentType, func(r rune) bool { return r < ' ' || r > '~' }):
		return o, 400, errors.New("Content-Type must be at most 256 printable ASCII characters (S3 would alter it)")
	}
	if q.Has("ttl") {
		o.TTL, err = parseTTL(q.Get("ttl"))
	}
	return o, 400, err
}

// condition is a write's preconditions, as the store judges them against the live value; nil when it has
// none (If-Modified-Since applies to reads only).
func condition(r *http.Request) Condition {
	h := r.Header
	if h.Get("If-Match") == "" && h.Get("If-None-Match") == "" && h.Get("If-Unmodified-Since") == "" {
		return nil
	}
	return func(cur Meta, exists bool) bool { return conditionStatus(r, cur, exists) == 0 }
}

// conditionStatus evaluates r's preconditions against the value m (exists false: there is none) in RFC 9110's
// order (§13.2.2): 412, or 304 for a read, for the first that fails; else 0.
func conditionStatus(r *http.Request, m Meta, exists bool) int {
	im, inm, read := r.Header.Get("If-Match"), r.Header.Get("If-None-Match"), r.Method == "GET" || r.Method == "HEAD"
	ius, hasIUS := httpDate(r.Header, "If-Unmodified-Since")
	ims, hasIMS := httpDate(r.Header, "If-Modified-Since")
	modified := m.LastModified.Truncate(time.Second) // HTTP dates have whole seconds
	noneMatch := inm != "" && exists && etagMatch(inm, m.ETag, true)
	switch {
	case im != "" && !(exists && etagMatch(im, m.ETag, false)), im == "" && hasIUS && exists && modified.After(ius),
		noneMatch && !read:
		return http.StatusPreconditionFailed
	case noneMatch, read && inm == "" && hasIMS && !modified.After(ims):
		return http.StatusNotModified
	}
	return 0
}

// httpDate reads a date header; one that does not parse is ignored, as RFC 9110 says.
func httpDate(h http.Header, name string) (time.Time, bool) {
	if h.Get(name) == "" { // most requests: no parse
		return time.Time{}, false
	}
	t, err := http.ParseTime(h.Get(name))
	return t, err == nil
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
			return nil, "", fmt.Errorf("unknown query parameter %q; allowed: %s", name, strings.Join(known, ", "))
		}
	}
	switch {
	case (q.Has("version") || q.Has("versions")) && !st.versioned:
		return nil, "", errors.New("versioning is off for this bucket: start kv with S3_VERSIONING=true")
	case q.Has("version") && q.Has("versions"):
		return nil, "", errors.New("ask for one version (?version=<id>) or the history (?versions), not both")
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
		status := conditionStatus(r, m, true)
		if status == http.StatusPreconditionFailed {
			writeStoreError(log, w, ErrPrecondition)
			return
		}
		setValueHeader(w.Header(), m)
		w.WriteHeader(cmp.Or(status, http.StatusOK))
		if body == nil || status != 0 {
			return
		}
		// A value is its length, copied a part at a time: each write has CLIENT_TIMEOUT (a slow reader of a
		// large write is not a stalled one). Too late for a status on an error: the short body says it.
		_, err = io.Copy(w, io.LimitReader(body, m.Size))
		if err != nil {
			log.Warn("value stream broken", "request_id", w.Header().Get("X-Request-Id"), "err", err)
		}
	}
}

// setValueHeader sets a value's response headers (by their canonical names: a cache hit's time matters).
func setValueHeader(h http.Header, m Meta) {
	h["Content-Type"] = []string{m.ContentType}
	h["Content-Length"] = []string{strconv.FormatInt(m.Size, 10)}
	h["Etag"] = []string{m.ETag}
	h["Last-Modified"] = []string{m.LastModified.UTC().Format(http.TimeFormat)}
	h["Cache-Control"] = []string{"no-cache"} // a value can be replaced at any time: revalidate (cheap, by ETag)
	if !m.ExpiresAt.IsZero() {
		h["Expires"] = []string{m.ExpiresAt.UTC().Format(http.TimeFormat)}
	}
	if m.Version != "" {
		h["X-Version-Id"] = []string{m.Version}
	}
}

func handleDelete(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, version, err := query(st, r, "version")
		cond := condition(r)
		if err == nil && version != "" && cond != nil {
			err = errors.New("preconditions apply to the current value; DELETE ?version= removes that version as it is")
		}
		if err != nil {
			writeError(w, 400, err.Error())
			return
		}
		err = st.Delete(storeContext(r), r.PathValue("key"), version, cond)
		if err != nil {
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
			key, _ := keyOf(c)
			return checkKey(key, true) == nil && strings.HasPrefix(key, prefix)
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

// handleReady answers from the last check of the bucket; one probe a second checks again (they need no
// token: a flood of probes must not become a flood of S3 calls), waiting for S3 a second at most. It logs
// each change.
func handleReady(log *slog.Logger, st *Store) http.HandlerFunc {
	var down atomic.Bool // kv starts ready: it checked its bucket before it listened
	var due atomic.Int64 // Unix nanoseconds when the next check is due
	return func(w http.ResponseWriter, r *http.Request) {
		now, next := time.Now().UnixNano(), due.Load()
		check := now >= next && due.CompareAndSwap(next, now+int64(time.Second)) // this probe checks
		if check {
			ctx, cancel := context.WithTimeout(storeContext(r), time.Second)
			err := st.Ready(ctx)
			cancel()
			was := down.Swap(err != nil)
			if was != (err != nil) {
				log.Warn("readiness changed", "ready", err == nil, "err", err)
			}
		}
		if down.Load() {
			writeError(w, 503, "not ready: the bucket does not answer")
			return
		}
		writeJSON(w, 200, map[string]string{"status": "ready"})
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
	for seg, rest, more := "", key, true; more; {
		seg, rest, more = strings.Cut(rest, "/")
		switch {
		case !utf8.ValidString(seg):
			return errors.New("is not valid UTF-8")
		case strings.ContainsFunc(seg, unicode.IsControl):
			return errors.New("contains a control character")
		case (seg == "" || seg == "." || seg == "..") && (more || !prefix):
			return errors.New(`has an empty, "." or ".." path segment (no leading, trailing or double slash)`)
		case len(seg)+strings.Count(seg, "!") > 254: // an object's name ends in "!": see objectPath
			return errors.New("has a path segment over 254 bytes, each ! counting twice (MinIO's is 255 bytes)")
		}
	}
	// The longest object name kv makes for a key is its TTL index entry: see indexKey and objectPath.
	if len(indexPrefix)+indexWidth+1+len(key)+strings.Count(key, "!")+1 > maxObjectKey {
		return fmt.Errorf("is too long for S3's %d-byte names (keys up to %d bytes fit)", maxObjectKey, maxObjectKey-15)
	}
	return nil
}

// writeStoreError maps every store error to its status, in one place. Only a storage failure is logged, with
// its cause (which names the S3 operation and says what happened, never the key).
func writeStoreError(log *slog.Logger, w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNoVersion):
		writeError(w, 404, "version not found: no value has that version id (or it is a delete marker)")
	case errors.Is(err, ErrNotFound):
		writeError(w, 404, "key not found")
	case errors.Is(err, ErrPrecondition):
		writeError(w, 412, `precondition failed (entity tags go in quotes, as ETag gives them: If-Match: "6654c7...")`)
	case errors.Is(err, ErrBadKey):
		writeError(w, 400, "key: the storage refuses this name (MinIO allows 255 bytes between slashes, each ! twice)")
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
		defer m.inFlight.Add(-1) // after the access line: shutdown waits for it
		id := r.Header.Get("X-Request-Id")
		if !token(id, 64) {
			id = strconv.FormatUint(rand.Uint64(), 36)
		}
		w.Header().Set("X-Request-Id", id)
		rec := &recorder{ResponseWriter: w, rc: http.NewResponseController(w), idle: idle}
		next.ServeHTTP(rec, r)
		status := cmp.Or(rec.status, 200) // a handler that wrote nothing: net/http sends 200
		took := time.Since(start)
		method, route := r.Method, cmp.Or(r.Pattern, "unmatched")
		if !slices.Contains([]string{"GET", "HEAD", "PUT", "DELETE", "POST", "PATCH", "OPTIONS"}, method) {
			method = "other" // methods are the client's choice: keep the label bounded
		}
		m.observe(m.http, series{route: route, method: method, code: status}, took)
		if log.Enabled(r.Context(), slog.LevelInfo) { // a record of kv's own spares slog a stack walk per line
			line := slog.NewRecord(start.Add(took), slog.LevelInfo, "request", 0)
			line.AddAttrs(slog.String("request_id", id), slog.String("method", r.Method), slog.String("route", route),
				slog.Int("status", status), slog.Int64("bytes", rec.bytes),
				slog.Int64("duration_us", took.Microseconds()))
			log.Handler().Handle(r.Context(), line)
		}
	})
}

// token reports whether s is 1 to max printable ASCII characters without spaces (request and version ids).
func token(s string, max int) bool {
	return s != "" && len(s) <= max && !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r > '~' })
}

// recorder notes a response's status and size. A client that stops reading cannot hold a handler: each
// write of the answer, its headers included, must make progress within idle.
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
	}
	r.rc.SetWriteDeadline(time.Now().Add(r.idle))
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Latency buckets in seconds, for HTTP requests and S3 calls alike.
var buckets = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, math.Inf(1)}

// metrics holds what /metrics shows; one mutex guards the histograms. Labels are bounded: never a key.
type metrics struct {
	mu                  sync.Mutex
	http, s3            map[series]*histogram
	inFlight, reclaimed atomic.Int64
	cache               *cache // nil when off
}

// series is a histogram's labels: route, method and code of HTTP requests; operation and code of S3 calls.
type series struct {
	route, method, operation string
	code                     int // S3's: 0 for no answer
}

func (s series) labels() string {
	if s.operation != "" {
		return fmt.Sprintf("operation=%q,code=\"%d\"", s.operation, s.code)
	}
	return fmt.Sprintf("route=%q,method=%q,code=\"%d\"", s.route, s.method, s.code)
}

type histogram struct {
	counts [len(buckets)]int64 // per bucket, not cumulative
	sum    time.Duration
}

func newMetrics(c *cache) *metrics {
	return &metrics{http: map[series]*histogram{}, s3: map[series]*histogram{}, cache: c}
}

// observe counts d in family's histogram of series k.
func (m *metrics) observe(family map[series]*histogram, k series, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	h := family[k]
	if h == nil {
		h = &histogram{}
		family[k] = h
	}
	i, _ := slices.BinarySearch(buckets[:], d.Seconds())
	h.counts[i]++
	h.sum += d
}

// ServeHTTP writes the Prometheus text format (0.0.4). It renders under
// the locks and writes after: a scrape that reads slowly holds nothing.
func (m *metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	m.mu.Lock()
	writeHistograms(&b, "http_request_duration_seconds", "HTTP requests: time to answer.", m.http)
	writeHistograms(&b, "kv_s3_request_duration_seconds",
		"S3 requests (each attempt): time to response headers, by operation and S3's code (0: no answer).", m.s3)
	m.mu.Unlock()
	one := func(name, typ, help string, v any) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	one("http_requests_in_flight", "gauge", "HTTP requests being answered now.", m.inFlight.Load())
	one("kv_ttl_reclaimed_total", "counter", "Expired values the TTL sweeper deleted.", m.reclaimed.Load())
	one("go_goroutines", "gauge", "Goroutines that currently exist.", runtime.NumGoroutine())
	if c := m.cache; c != nil {
		c.mu.Lock()
		one("kv_cache_bytes", "gauge", "Memory the cache's entries take, as CACHE_MAX_BYTES counts it.", c.used)
		one("kv_cache_items", "gauge", "Entries held in the cache.", c.ll.Len())
		one("kv_cache_hits_total", "counter", "GETs answered from the cache.", c.hits)
		one("kv_cache_misses_total", "counter", "GETs the cache could not answer.", c.misses)
		one("kv_cache_evictions_total", "counter", "Entries evicted to fit CACHE_MAX_BYTES.", c.evictions)
		c.mu.Unlock()
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write(b.Bytes())
}

// writeHistograms writes one family of histograms.
func writeHistograms(w io.Writer, name, help string, family map[series]*histogram) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	for s, h := range family {
		l := s.labels()
		var total int64
		for i, le := range buckets {
			total += h.counts[i]
			fmt.Fprintf(w, "%s_bucket{%s,le=\"%g\"} %d\n", name, l, le, total)
		}
		fmt.Fprintf(w, "%s_sum{%s} %g\n%s_count{%s} %d\n", name, l, h.sum.Seconds(), name, l, total)
	}
}
