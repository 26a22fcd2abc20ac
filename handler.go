package main

import (
	"bytes"
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	maxTTL       = 365 * 24 * time.Hour
	spoolInMem   = 1 << 20 // a body of unknown length is kept in memory up to this, then in a temp file
	maxListLimit = 1000
)

// newServer registers every route and wraps them in the middleware every request passes.
func newServer(log *slog.Logger, st *Store, m *metrics, maxValue int64, token string, ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /kv/{key...}", handlePut(log, st, maxValue))
	mux.HandleFunc("GET /kv/{key...}", handleGet(log, st))
	mux.HandleFunc("HEAD /kv/{key...}", handleHead(log, st))
	mux.HandleFunc("DELETE /kv/{key...}", handleDelete(log, st))
	mux.HandleFunc("/kv/{key...}", methodNotAllowed("GET, HEAD, PUT, DELETE"))
	mux.HandleFunc("GET /kv", handleList(log, st))
	mux.HandleFunc("/kv", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("/healthz", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("GET /readyz", handleReady(st, ready))
	mux.HandleFunc("/readyz", methodNotAllowed("GET, HEAD"))
	mux.Handle("GET /metrics", m)
	mux.HandleFunc("/metrics", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { writeError(w, 404, "no such endpoint") })
	return withRequestLog(log, m, requireToken(token, checkKeyPath(mux)))
}

func handlePut(log *slog.Logger, st *Store, maxValue int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("key")
		o, err := putOptions(r)
		if err != nil {
			writeError(w, 400, err.Error())
			return
		}
		if r.ContentLength > maxValue {
			writeError(w, 413, fmt.Sprintf("value is larger than the limit of %d bytes", maxValue))
			return
		}
		body := &bodyReader{r: http.MaxBytesReader(w, r.Body, maxValue)}
		size := r.ContentLength
		var in io.Reader = body
		if size < 0 { // chunked: S3 needs the length up front
			var cleanup func()
			in, size, cleanup, err = spool(body)
			defer cleanup()
		}
		var m Meta
		if err == nil {
			m, err = st.Put(r.Context(), key, in, size, o)
		}
		if body.err != nil {
			if errors.As(body.err, new(*http.MaxBytesError)) {
				writeError(w, 413, fmt.Sprintf("value is larger than the limit of %d bytes", maxValue))
			} else {
				writeError(w, 400, "could not read the request body: "+body.err.Error())
			}
			return
		}
		if err != nil {
			writeStoreError(log, w, r, err)
			return
		}
		w.Header().Set("ETag", m.ETag)
		resp := struct {
			Key       string `json:"key"`
			Size      int64  `json:"size"`
			ETag      string `json:"etag"`
			ExpiresAt string `json:"expires_at,omitempty"`
			Version   string `json:"version,omitempty"`
		}{Key: key, Size: m.Size, ETag: m.ETag, Version: m.Version}
		if !m.ExpiresAt.IsZero() {
			resp.ExpiresAt = m.ExpiresAt.UTC().Format(time.RFC3339Nano)
		}
		writeJSON(w, 200, resp)
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// putOptions reads a PUT's content type, preconditions and ttl.
func putOptions(r *http.Request) (PutOptions, error) {
	o := PutOptions{ContentType: r.Header.Get("Content-Type"), IfMatch: r.Header.Get("If-Match")}
	if o.ContentType == "" {
		o.ContentType = "application/octet-stream"
	}
	if len(o.ContentType) > 256 || strings.ContainsFunc(o.ContentType, func(r rune) bool { return r < ' ' || r > '~' }) {
		return o, errors.New("Content-Type must be at most 256 printable ASCII characters (S3 would alter it)")
	}
	switch inm := r.Header.Get("If-None-Match"); {
	case inm == "":
	case strings.TrimSpace(inm) != "*":
		return o, errors.New("If-None-Match on PUT accepts only *")
	case o.IfMatch != "":
		return o, errors.New("use either If-Match or If-None-Match, not both")
	default:
		o.IfNoneMatch = true
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return o, errors.New("malformed query string")
	}
	if q.Has("ttl") {
		ttl, err := parseTTL(q.Get("ttl"))
		if err != nil {
			return o, err
		}
		o.TTL = ttl
	}
	return o, nil
}

// parseTTL accepts a Go duration (30s, 5m, 1h30m) or whole seconds, from 1s to maxTTL.
func parseTTL(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if n, nerr := strconv.ParseInt(s, 10, 64); nerr == nil {
		d, err = time.Duration(n)*time.Second, nil
		if n > int64(maxTTL/time.Second) {
			d = maxTTL + 1
		}
	}
	if err != nil || d < time.Second || d > maxTTL {
		return 0, fmt.Errorf("ttl must be a duration such as 30s, 5m or 1h30m, or whole seconds, from 1s to %s", maxTTL)
	}
	return d, nil
}

func handleGet(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, version, err := versionQuery(st, r)
		if err != nil {
			writeError(w, 400, err.Error())
			return
		}
		if q.Has("versions") {
			listVersions(log, st, w, r, q)
			return
		}
		body, m, err := st.Get(r.Context(), r.PathValue("key"), version)
		if err != nil {
			writeStoreError(log, w, r, err)
			return
		}
		defer body.Close()
		if writeValueHeader(w, r, m) == http.StatusNotModified {
			return
		}
		// A pooled buffer, through the response's own buffered writer: a small value leaves with its headers
		// in one write, and nothing is allocated per request (net/http's ReadFrom path allocates 32 KiB).
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		if _, err := io.CopyBuffer(w, body, *buf); err != nil {
			// Too late for a status: the short body tells the client, the log tells us.
			log.Warn("value stream broken", "request_id", w.Header().Get("X-Request-ID"), "err", err)
		}
	}
}

func handleHead(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, version, err := versionQuery(st, r)
		if err != nil {
			writeError(w, 400, err.Error())
			return
		}
		m, err := st.Head(r.Context(), r.PathValue("key"), version)
		if err != nil {
			writeStoreError(log, w, r, err)
			return
		}
		writeValueHeader(w, r, m)
	}
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

func listVersions(log *slog.Logger, st *Store, w http.ResponseWriter, r *http.Request, q url.Values) {
	limit, after, err := pageQuery(q)
	if err != nil || (after != "" && !token(after, 1024)) {
		writeError(w, 400, cmp.Or(err, errors.New("cursor is not one this service returned")).Error())
		return
	}
	vs, next, err := st.Versions(r.Context(), r.PathValue("key"), after, limit)
	if err != nil {
		writeStoreError(log, w, r, err)
		return
	}
	writePage(w, "versions", vs, next)
}

// writePage answers a listing: its items (never null) and, when more may follow, an opaque next_cursor.
func writePage[T any](w http.ResponseWriter, name string, items []T, next string) {
	page := map[string]any{name: append([]T{}, items...)}
	if next != "" {
		page["next_cursor"] = base64.RawURLEncoding.EncodeToString([]byte(next))
	}
	writeJSON(w, 200, page)
}

// pageQuery reads limit (default 100, at most maxListLimit) and the opaque cursor of a listing.
func pageQuery(q url.Values) (limit int, after string, err error) {
	limit = 100
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxListLimit {
			return 0, "", fmt.Errorf("limit must be a whole number from 1 to %d", maxListLimit)
		}
	}
	b, err := base64.RawURLEncoding.DecodeString(q.Get("cursor"))
	if err != nil {
		return 0, "", errors.New("cursor is not one this service returned")
	}
	return limit, string(b), nil
}

// writeValueHeader sends a value's headers with 200, or 304 when If-None-Match names its ETag.
func writeValueHeader(w http.ResponseWriter, r *http.Request, m Meta) int {
	vh, h := m.header, w.Header()
	if vh == nil {
		vh = valueHeader(m)
	}
	for k, v := range vh {
		h[k] = v
	}
	status := http.StatusOK
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, m.ETag) {
		status = http.StatusNotModified
	}
	w.WriteHeader(status)
	return status
}

// valueHeader formats a value's response headers; a cached value keeps them, formatted once.
func valueHeader(m Meta) http.Header {
	h := http.Header{
		"Content-Type":   {m.ContentType},
		"Content-Length": {strconv.FormatInt(m.Size, 10)},
		"Etag":           {m.ETag},
		"Last-Modified":  {m.LastModified.UTC().Format(http.TimeFormat)},
		// Values can be replaced at any time: caches must revalidate (cheap, with the ETag).
		"Cache-Control": {"no-cache"},
	}
	if !m.ExpiresAt.IsZero() {
		h["Expires"] = []string{m.ExpiresAt.UTC().Format(http.TimeFormat)}
	}
	if m.Version != "" {
		h["X-Version-Id"] = []string{m.Version}
	}
	return h
}

func handleDelete(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, version, err := versionQuery(st, r)
		if err != nil || q.Has("versions") {
			writeError(w, 400, cmp.Or(err, errors.New("DELETE takes ?version=<id>, not ?versions")).Error())
			return
		}
		if version != "" {
			err = st.DeleteVersion(r.Context(), r.PathValue("key"), version)
		} else {
			err = st.Delete(r.Context(), r.PathValue("key"))
		}
		if err != nil {
			writeStoreError(log, w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func handleList(log *slog.Logger, st *Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			writeError(w, 400, "malformed query string")
			return
		}
		prefix := q.Get("prefix")
		if err := checkKey(prefix, true); err != nil {
			writeError(w, 400, "prefix: "+err.Error())
			return
		}
		limit, after, err := pageQuery(q)
		if err == nil && checkKey(after, true) != nil {
			err = errors.New("cursor is not one this service returned")
		}
		if err != nil {
			writeError(w, 400, err.Error())
			return
		}
		keys, next, err := st.List(r.Context(), prefix, after, limit)
		if err != nil {
			writeStoreError(log, w, r, err)
			return
		}
		writePage(w, "keys", keys, next)
	}
}

func handleReady(st *Store, ready *atomic.Bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			writeError(w, 503, "not ready: starting or shutting down")
			return
		}
		if err := st.Ready(r.Context()); err != nil {
			w.Header().Set("Retry-After", "1")
			writeError(w, 503, "not ready: the bucket does not answer")
			return
		}
		writeJSON(w, 200, map[string]string{"status": "ready"})
	}
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, 405, "method "+r.Method+" is not allowed here; allowed: "+allow)
	}
}

// requireToken demands "Authorization: Bearer <token>" on everything but the health endpoints, when a token
// is set. The comparison takes the same time whatever the guess.
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" &&
			subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kv"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token (Authorization: Bearer <AUTH_TOKEN>)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkKeyPath rejects bad keys before the mux sees them: the mux would answer a path with empty, "." or
// ".." segments with a redirect to a different key.
func checkKeyPath(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if key, ok := strings.CutPrefix(r.URL.Path, "/kv/"); ok {
			if err := checkKey(key, false); err != nil {
				writeError(w, 400, "key: "+err.Error())
				return
			}
		}
		next.ServeHTTP(w, r)
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
	// The longest object name kv makes for a key is its TTL index entry: see indexKey and objectPath.
	stored := len(indexPrefix) + indexWidth + 1 + len(key) + strings.Count(key, "!") + 1
	for seg, rest, more := "", key, true; more; {
		seg, rest, more = strings.Cut(rest, "/")
		switch {
		case strings.ContainsFunc(seg, unicode.IsControl):
			return errors.New("contains a control character")
		case (seg == "" || seg == "." || seg == "..") && (more || !prefix):
			return errors.New(`has an empty, "." or ".." path segment (no leading, trailing or double slash)`)
		}
	}
	if stored > maxObjectKey {
		return fmt.Errorf("is too long for S3's %d-byte object names (keys up to %d bytes always fit)",
			maxObjectKey, maxObjectKey-15)
	}
	return nil
}

// spool reads a body of unknown length, which S3 must be told up front: in memory up to spoolInMem,
// beyond that in a temporary file. The caller's body reader enforces the size limit.
func spool(body io.Reader) (io.Reader, int64, func(), error) {
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, body, spoolInMem+1)
	if err == io.EOF {
		return &buf, n, func() {}, nil
	} else if err != nil {
		return nil, 0, func() {}, err
	}
	f, err := os.CreateTemp("", "kv-spool-*")
	if err != nil {
		return nil, 0, func() {}, err
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	if n, err = io.Copy(f, io.MultiReader(&buf, body)); err != nil {
		return nil, 0, cleanup, err
	}
	_, err = f.Seek(0, io.SeekStart)
	return f, n, cleanup, err
}

// bodyReader remembers the client's read error, so a broken or oversized upload is told apart from
// a storage failure.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// writeStoreError maps every store error to its status, in one place.
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
		// The client went away; nobody reads this answer and the access log shows 499.
	default:
		log.Error("storage unavailable", "request_id", w.Header().Get("X-Request-ID"), "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, 503, "storage unavailable, retry later")
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}{msg, w.Header().Get("X-Request-ID")})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// withRequestLog gives every request an ID (a sane incoming X-Request-ID is kept), echoes it, writes one
// access line per request and counts it. Values, keys and headers other than the ID are never logged.
func withRequestLog(log *slog.Logger, m *metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.inFlight.Add(1)
		defer m.inFlight.Add(-1)
		id := r.Header.Get("X-Request-ID")
		if !token(id, 64) {
			id = strconv.FormatUint(rand.Uint64(), 36)
		}
		w.Header()["X-Request-Id"] = []string{id} // canonical already: skips canonicalizing on every request
		rec := recorders.Get().(*recorder)
		*rec = recorder{ResponseWriter: w}
		defer recorders.Put(rec)
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = 499 // nothing written: the client closed the request
		}
		d := time.Since(start)
		m.observeHTTP(r.Pattern, r.Method, rec.status, d)
		if !log.Enabled(r.Context(), slog.LevelInfo) {
			return
		}
		log.LogAttrs(r.Context(), slog.LevelInfo, "request", slog.String("request_id", id),
			slog.String("method", r.Method), slog.String("route", r.Pattern), slog.Int("status", rec.status),
			slog.Int64("bytes", rec.bytes), slog.Float64("duration_ms", float64(d.Microseconds())/1000))
	})
}

// token reports whether s is 1 to max printable ASCII characters, without spaces (request and version ids).
func token(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

var recorders = sync.Pool{New: func() any { return new(recorder) }}

// recorder notes the status and size of a response for the access log.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = 200
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
