package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testMaxValue = 1 << 10

type testServer struct {
	h     http.Handler
	s3    *fakeS3
	log   *bytes.Buffer
	up    *atomic.Bool
	clock *clock
}

func newTestServer(t testing.TB) *testServer {
	t.Helper()
	st, f, c := newFakeStore(t)
	var logs bytes.Buffer
	ready := &atomic.Bool{}
	ready.Store(true)
	h := newServer(slog.New(slog.NewJSONHandler(&logs, nil)), st, newMetrics(nil), testMaxValue, "", ready)
	return &testServer{h: h, s3: f, log: &logs, up: ready, clock: c}
}

func (ts *testServer) do(method, target, body string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	if r.Header.Get("Transfer-Encoding") == "chunked" {
		r.ContentLength = -1
	}
	w := httptest.NewRecorder()
	ts.h.ServeHTTP(w, r)
	return w
}

// wantError checks a JSON error body with the request's ID.
func wantError(t *testing.T, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status: got %d, want %d (body %s)", w.Code, status, w.Body)
	}
	var e struct {
		Error     string
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("error body: got %q, want JSON with error", w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type: got %q, want application/json", ct)
	}
	if id := w.Header().Get("X-Request-ID"); id == "" || e.RequestID != id {
		t.Errorf("request_id: got %q, header %q, want the same non-empty ID", e.RequestID, id)
	}
}

func TestPutGetHeadDelete(t *testing.T) {
	ts := newTestServer(t)
	w := ts.do("PUT", "/kv/dir/ünï%20k", "hello", "Content-Type", "text/plain")
	if w.Code != 200 {
		t.Fatalf("PUT: got %d %s", w.Code, w.Body)
	}
	var got struct {
		Key  string
		Size int64
		ETag string
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.Key != "dir/ünï k" || got.Size != 5 {
		t.Errorf("PUT body: got %s, want key \"dir/ünï k\" size 5", w.Body)
	}
	if etag := w.Header().Get("ETag"); etag == "" || etag != got.ETag {
		t.Errorf("PUT ETag header %q, body etag %q: want the same", etag, got.ETag)
	}
	w = ts.do("GET", "/kv/dir/ünï%20k", "")
	if w.Code != 200 || w.Body.String() != "hello" {
		t.Errorf("GET: got %d %q, want 200 hello", w.Code, w.Body)
	}
	for h, want := range map[string]string{"Content-Type": "text/plain", "Content-Length": "5", "ETag": got.ETag} {
		if v := w.Header().Get(h); v != want {
			t.Errorf("GET %s: got %q, want %q", h, v, want)
		}
	}
	if _, err := http.ParseTime(w.Header().Get("Last-Modified")); err != nil {
		t.Errorf("GET Last-Modified: %v", err)
	}
	if w = ts.do("GET", "/kv/dir/ünï%20k", "", "If-None-Match", got.ETag); w.Code != 304 || w.Body.Len() != 0 {
		t.Errorf("GET If-None-Match: got %d %q, want 304 and no body", w.Code, w.Body)
	}
	heads := ts.s3.count("GetObject")
	if w = ts.do("HEAD", "/kv/dir/ünï%20k", ""); w.Code != 200 || w.Header().Get("Content-Length") != "5" || w.Body.Len() != 0 {
		t.Errorf("HEAD: got %d, length %q, body %q", w.Code, w.Header().Get("Content-Length"), w.Body)
	}
	if ts.s3.count("GetObject") != heads {
		t.Error("HEAD downloaded the value")
	}
	if w = ts.do("DELETE", "/kv/dir/ünï%20k", ""); w.Code != 204 {
		t.Errorf("DELETE: got %d, want 204", w.Code)
	}
	wantError(t, ts.do("GET", "/kv/dir/ünï%20k", ""), 404)
	wantError(t, ts.do("HEAD", "/kv/dir/ünï%20k", ""), 404)
	wantError(t, ts.do("DELETE", "/kv/dir/ünï%20k", ""), 404)
}

func TestEmptyValueAndDefaultType(t *testing.T) {
	ts := newTestServer(t)
	if w := ts.do("PUT", "/kv/e", ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"size":0`) {
		t.Fatalf("PUT empty: got %d %s", w.Code, w.Body)
	}
	w := ts.do("GET", "/kv/e", "")
	if w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("Content-Type") != "application/octet-stream" {
		t.Errorf("GET empty: got %d %q type %q, want 200, empty, application/octet-stream", w.Code, w.Body, w.Header().Get("Content-Type"))
	}
}

func TestBadRequests(t *testing.T) {
	long := strings.Repeat("k", maxObjectKey)
	tests := []struct {
		name, method, target, body string
		header                     []string
		status                     int
	}{
		{"empty key", "PUT", "/kv/", "v", nil, 400},
		{"dot segment", "PUT", "/kv/a/../b", "v", nil, 400},
		{"single dot", "GET", "/kv/a/./b", "", nil, 400},
		{"encoded dots", "PUT", "/kv/%2e%2e/x", "v", nil, 400},
		{"double slash", "PUT", "/kv/a//b", "v", nil, 400},
		{"trailing slash", "PUT", "/kv/a/", "v", nil, 400},
		{"control character", "PUT", "/kv/a%00b", "v", nil, 400},
		{"invalid utf-8", "PUT", "/kv/a%ffb", "v", nil, 400},
		{"key too long", "PUT", "/kv/" + long, "v", nil, 400},
		{"ttl zero", "PUT", "/kv/k?ttl=0", "v", nil, 400},
		{"ttl negative", "PUT", "/kv/k?ttl=-5s", "v", nil, 400},
		{"ttl words", "PUT", "/kv/k?ttl=abc", "v", nil, 400},
		{"ttl too fine", "PUT", "/kv/k?ttl=1ms", "v", nil, 400},
		{"ttl overflow", "PUT", "/kv/k?ttl=99999999999999999999", "v", nil, 400},
		{"ttl empty", "PUT", "/kv/k?ttl=", "v", nil, 400},
		{"If-None-Match etag", "PUT", "/kv/k", "v", []string{"If-None-Match", `"abc"`}, 400},
		{"both preconditions", "PUT", "/kv/k", "v", []string{"If-None-Match", "*", "If-Match", `"abc"`}, 400},
		{"non-ASCII Content-Type", "PUT", "/kv/k", "v", []string{"Content-Type", "text/ünï"}, 400},
		{"too large", "PUT", "/kv/k", strings.Repeat("x", testMaxValue+1), nil, 413},
		{"too large chunked", "PUT", "/kv/k", strings.Repeat("x", testMaxValue+1), []string{"Transfer-Encoding", "chunked"}, 413},
		{"If-Match on absent", "PUT", "/kv/k", "v", []string{"If-Match", `"abc"`}, 412},
		{"limit zero", "GET", "/kv?limit=0", "", nil, 400},
		{"limit too big", "GET", "/kv?limit=1001", "", nil, 400},
		{"limit words", "GET", "/kv?limit=ten", "", nil, 400},
		{"bad cursor", "GET", "/kv?cursor=!!", "", nil, 400},
		{"bad prefix", "GET", "/kv?prefix=a%00", "", nil, 400},
		{"no such endpoint", "GET", "/nope", "", nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			wantError(t, ts.do(tt.method, tt.target, tt.body, tt.header...), tt.status)
			if n := ts.s3.count("PutObject"); n != 0 {
				t.Errorf("a rejected request wrote %d objects", n)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	tests := []struct{ method, target, allow string }{
		{"POST", "/kv/k", "GET, HEAD, PUT, DELETE"},
		{"PATCH", "/kv/k", "GET, HEAD, PUT, DELETE"},
		{"PUT", "/kv", "GET, HEAD"},
		{"DELETE", "/kv", "GET, HEAD"},
		{"POST", "/healthz", "GET, HEAD"},
		{"PUT", "/readyz", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.target, func(t *testing.T) {
			w := newTestServer(t).do(tt.method, tt.target, "")
			wantError(t, w, 405)
			if got := w.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow: got %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestSizeLimitBoundary(t *testing.T) {
	ts := newTestServer(t)
	body := strings.Repeat("x", testMaxValue)
	for _, te := range []string{"", "chunked"} {
		if w := ts.do("PUT", "/kv/max", body, "Transfer-Encoding", te); w.Code != 200 {
			t.Errorf("PUT of exactly the limit (%q): got %d %s", te, w.Code, w.Body)
		}
	}
	if w := ts.do("GET", "/kv/max", ""); w.Body.String() != body {
		t.Errorf("GET: got %d bytes, want %d", w.Body.Len(), len(body))
	}
}

func TestSpoolLargeChunkedBody(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), spoolInMem/5) // past the in-memory part
	r, n, cleanup, err := spool(bytes.NewReader(body))
	defer cleanup()
	if err != nil || n != int64(len(body)) {
		t.Fatalf("spool: got %d, %v, want %d", n, err, len(body))
	}
	if _, isFile := r.(interface{ Name() string }); !isFile {
		t.Error("a body over spoolInMem was kept in memory")
	}
	if got, _ := io.ReadAll(r); !bytes.Equal(got, body) {
		t.Error("spooled body differs")
	}
}

func TestConditionalWrites(t *testing.T) {
	ts := newTestServer(t)
	if w := ts.do("PUT", "/kv/c", "v1", "If-None-Match", "*"); w.Code != 200 {
		t.Fatalf("If-None-Match * on absent: got %d", w.Code)
	}
	wantError(t, ts.do("PUT", "/kv/c", "v2", "If-None-Match", "*"), 412)
	etag := ts.do("GET", "/kv/c", "").Header().Get("ETag")
	wantError(t, ts.do("PUT", "/kv/c", "v2", "If-Match", `"not-it"`), 412)
	if w := ts.do("PUT", "/kv/c", "v2", "If-Match", etag); w.Code != 200 {
		t.Errorf("If-Match current: got %d %s", w.Code, w.Body)
	}
	wantError(t, ts.do("PUT", "/kv/c", "v3", "If-Match", etag), 412)
	if got := ts.do("GET", "/kv/c", "").Body.String(); got != "v2" {
		t.Errorf("value: got %q, want v2", got)
	}
}

func TestTTLHeaders(t *testing.T) {
	ts := newTestServer(t)
	w := ts.do("PUT", "/kv/t?ttl=30", "v")
	var resp struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || !resp.ExpiresAt.Equal(ts.clock.now().Add(30*time.Second)) {
		t.Fatalf("expires_at: got %s, want now+30s", w.Body)
	}
	for _, m := range []string{"GET", "HEAD"} {
		exp, err := http.ParseTime(ts.do(m, "/kv/t", "").Header().Get("Expires"))
		if err != nil || !exp.Equal(resp.ExpiresAt.Truncate(time.Second)) {
			t.Errorf("%s Expires: got %v, %v, want %v", m, exp, err, resp.ExpiresAt.Truncate(time.Second))
		}
	}
	ts.clock.set(resp.ExpiresAt)
	wantError(t, ts.do("GET", "/kv/t", ""), 404)
	if w := ts.do("PUT", "/kv/t", "v"); w.Code != 200 || strings.Contains(w.Body.String(), "expires_at") {
		t.Errorf("PUT without ttl: got %d %s, want no expires_at", w.Code, w.Body)
	}
	if h := ts.do("GET", "/kv/t", "").Header(); h.Get("Expires") != "" {
		t.Errorf("permanent key has Expires %q", h.Get("Expires"))
	}
}

func TestParseTTL(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"30s", 30 * time.Second}, {"5m", 5 * time.Minute}, {"1h30m", 90 * time.Minute}, {"1", time.Second},
		{"1.5s", 1500 * time.Millisecond}, {"8760h", maxTTL}, {"31536000", maxTTL},
		{"0", 0}, {"-1", 0}, {"abc", 0}, {"1ms", 0}, {"999ms", 0}, {"8761h", 0}, {"31536001", 0},
		{"99999999999999999999", 0}, {"", 0}, {" 5", 0}, {"5 s", 0},
	}
	for _, tt := range tests {
		got, err := parseTTL(tt.in)
		if got != tt.want || (err == nil) != (tt.want != 0) {
			t.Errorf("parseTTL(%q): got %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestList(t *testing.T) {
	ts := newTestServer(t)
	for _, k := range []string{"a/1", "a/2", "a/3", "b"} {
		ts.do("PUT", "/kv/"+k, "v")
	}
	var page struct {
		Keys       []string
		NextCursor *string `json:"next_cursor"`
	}
	var all []string
	for cursor := ""; ; {
		w := ts.do("GET", "/kv?prefix=a/&limit=2&cursor="+cursor, "")
		page.NextCursor = nil
		if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil || w.Code != 200 {
			t.Fatalf("list: got %d %s", w.Code, w.Body)
		}
		all = append(all, page.Keys...)
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	if strings.Join(all, ",") != "a/1,a/2,a/3" {
		t.Errorf("keys: got %q, want a/1 a/2 a/3", all)
	}
	if w := ts.do("GET", "/kv?prefix=zzz", ""); w.Body.String() != "{\"keys\":[]}\n" {
		t.Errorf("empty list: got %q, want {\"keys\":[]}", w.Body)
	}
}

func TestRequestID(t *testing.T) {
	ts := newTestServer(t)
	if got := ts.do("GET", "/healthz", "", "X-Request-ID", "abc-123").Header().Get("X-Request-ID"); got != "abc-123" {
		t.Errorf("sane ID: got %q, want it kept", got)
	}
	for _, bad := range []string{strings.Repeat("x", 65), "has space", "tab\there", "ünï"} {
		got := ts.do("GET", "/healthz", "", "X-Request-ID", bad).Header().Get("X-Request-ID")
		if got == "" || got == bad {
			t.Errorf("ID %q: got %q, want a generated one", bad, got)
		}
	}
	a, b := ts.do("GET", "/healthz", ""), ts.do("GET", "/healthz", "")
	if a.Header().Get("X-Request-ID") == b.Header().Get("X-Request-ID") {
		t.Error("two requests got the same generated ID")
	}
	if !strings.Contains(ts.log.String(), `"request_id":"abc-123"`) {
		t.Error("the access log lacks the request ID")
	}
}

func TestStorageDownIs503AndLogsNoValue(t *testing.T) {
	ts := newTestServer(t)
	ts.s3.hook = func(op, key string) error { return errors.New("dial tcp: connection refused") }
	for _, r := range [][2]string{{"PUT", "/kv/k"}, {"GET", "/kv/k"}, {"HEAD", "/kv/k"}, {"DELETE", "/kv/k"}, {"GET", "/kv"}, {"GET", "/readyz"}} {
		w := ts.do(r[0], r[1], "secret-value-42")
		wantError(t, w, 503)
		if w.Header().Get("Retry-After") == "" {
			t.Errorf("%s %s: 503 without Retry-After", r[0], r[1])
		}
		if strings.Contains(w.Body.String(), "connection refused") {
			t.Errorf("%s %s: error body leaks internals: %s", r[0], r[1], w.Body)
		}
	}
	if strings.Contains(ts.log.String(), "secret-value-42") {
		t.Error("the log holds a value")
	}
}

func TestHealthAndReady(t *testing.T) {
	ts := newTestServer(t)
	if w := ts.do("GET", "/healthz", ""); w.Code != 200 {
		t.Errorf("healthz: got %d", w.Code)
	}
	if w := ts.do("GET", "/readyz", ""); w.Code != 200 {
		t.Errorf("readyz: got %d", w.Code)
	}
	ts.up.Store(false)
	wantError(t, ts.do("GET", "/readyz", ""), 503)
	if w := ts.do("GET", "/healthz", ""); w.Code != 200 {
		t.Errorf("healthz while not ready: got %d, want 200", w.Code)
	}
}

func TestLoadConfig(t *testing.T) {
	base := map[string]string{"S3_BUCKET": "kv-data"}
	tests := []struct {
		name string
		env  map[string]string
		ok   bool
	}{
		{"defaults", nil, true},
		{"no bucket", map[string]string{"S3_BUCKET": ""}, false},
		{"short bucket", map[string]string{"S3_BUCKET": "ab"}, false},
		{"half credentials", map[string]string{"S3_ACCESS_KEY": "k"}, false},
		{"bad port", map[string]string{"PORT": "http"}, false},
		{"bad timeout", map[string]string{"S3_TIMEOUT": "10"}, false},
		{"negative timeout", map[string]string{"SHUTDOWN_TIMEOUT": "-1s"}, false},
		{"bad size", map[string]string{"MAX_VALUE_BYTES": "lots"}, false},
		{"bad level", map[string]string{"LOG_LEVEL": "loud"}, false},
		{"bad bool", map[string]string{"S3_CREATE_BUCKET": "perhaps"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(func(k string) string {
				if v, ok := tt.env[k]; ok {
					return v
				}
				return base[k]
			})
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (c.Port != "8080" || c.Region != "us-east-1" || c.MaxValueBytes != 25<<20 || c.S3Timeout != 10*time.Second) {
				t.Errorf("defaults: got %+v", c)
			}
		})
	}
}

func TestMetricsExposition(t *testing.T) {
	m := newMetrics(newCache(1<<20, 0))
	m.start = time.Unix(1700000000, 500e6)
	m.observeHTTP("GET /kv/{key...}", "GET", 200, 3*time.Millisecond)
	m.observeHTTP("GET /kv/{key...}", "GET", 200, 2*time.Second)
	m.observeHTTP("", "BREW", 405, time.Millisecond)
	series[s3Labels, atomic.Int64](&m.s3Calls, s3Labels{"GetObject", "ok"}).Add(2)
	series[string, histogram](&m.s3Latency, "GetObject").observe(20 * time.Second)
	m.cache.put("k", entry("k", "vv"))
	m.reclaimed.Add(4)
	w := httptest.NewRecorder()
	m.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if ct := w.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type: got %q", ct)
	}
	got := regexp.MustCompile(`(?m)^(go_goroutines|kv_build_info\{.*\}) .*$`).ReplaceAllString(w.Body.String(), "$1 X")
	want, err := os.ReadFile("testdata/metrics.golden")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.WriteFile("testdata/metrics.golden", []byte(got), 0o644)
		return
	}
	if got := labelValue("a\"b\\c\nd"); got != `"a\"b\\c\nd"` {
		t.Errorf("labelValue: got %s", got)
	}
	if err != nil || got != string(want) {
		t.Errorf("exposition differs from testdata/metrics.golden (UPDATE_GOLDEN=1 rewrites it):\n%s", got)
	}
}

func TestMetricsCountRequests(t *testing.T) {
	ts := newTestServer(t)
	ts.do("PUT", "/kv/k", "v")
	ts.do("GET", "/kv/k", "")
	ts.do("GET", "/kv/missing", "")
	ts.do("GET", "/kv/missing", "")
	ts.do("GET", "/kv/a//b", "")
	body := ts.do("GET", "/metrics", "").Body.String()
	for _, line := range []string{
		`http_requests_total{route="PUT /kv/{key...}",method="PUT",code="200"} 1`,
		`http_requests_total{route="GET /kv/{key...}",method="GET",code="200"} 1`,
		`http_requests_total{route="GET /kv/{key...}",method="GET",code="404"} 2`,
		`http_requests_total{route="unmatched",method="GET",code="400"} 1`,
		`http_requests_in_flight 1`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
	if strings.Contains(body, "missing") {
		t.Error("a key reached a metric label")
	}
}

func TestCheckKey(t *testing.T) {
	fits := strings.Repeat("k", maxObjectKey-15)
	tests := []struct {
		key    string
		prefix bool
		ok     bool
	}{
		{"a", false, true}, {"a/b", false, true}, {"ünï/cødé", false, true}, {".hidden/..x/x..", false, true},
		{fits, false, true}, {fits + "k", false, false}, {"!" + fits[1:], false, false},
		{"", false, false}, {"/a", false, false}, {"a/", false, false}, {"a//b", false, false},
		{".", false, false}, {"a/..", false, false}, {"a\x00", false, false}, {"a\u0085", false, false},
		{"\xff", false, false}, {"a\x7f", false, false},
		{"", true, true}, {"a/", true, true}, {"a/.", true, true}, {"a//", true, false}, {"./a", true, false},
	}
	for _, tt := range tests {
		if err := checkKey(tt.key, tt.prefix); (err == nil) != tt.ok {
			t.Errorf("checkKey(%.20q, prefix %v): got %v, want ok=%v", tt.key, tt.prefix, err, tt.ok)
		}
	}
	if n := len(indexKey(fits, time.Now())); n != maxObjectKey {
		t.Errorf("the index entry of the longest key that fits: got %d bytes, want %d", n, maxObjectKey)
	}
	if n := testing.AllocsPerRun(100, func() { checkKey("some/ordinary/key", false) }); n != 0 {
		t.Errorf("checkKey allocates %v times per call, want 0", n)
	}
}

func TestVersionRequests(t *testing.T) {
	ts := newTestServer(t)
	ts.do("PUT", "/kv/k", "v")
	for _, target := range []string{"/kv/k?versions", "/kv/k?version=v0001"} {
		w := ts.do("GET", target, "")
		wantError(t, w, 400)
		if !strings.Contains(w.Body.String(), "S3_VERSIONING") {
			t.Errorf("%s on an unversioned bucket: got %s, want it to say how to turn versioning on", target, w.Body)
		}
	}
	wantError(t, ts.do("DELETE", "/kv/k?version=v0001", ""), 400)

	ts = newTestServer(t)
	ts.s3.versioned = true
	st := newStore(ts.s3, "test", time.Second, nil)
	if err := st.SetupVersioning(context.Background(), false); err != nil || !st.versioned {
		t.Fatalf("an already versioned bucket was not noticed: %v", err)
	}
	ready := &atomic.Bool{}
	ready.Store(true)
	ts.h = newServer(slog.New(slog.NewJSONHandler(io.Discard, nil)), st, newMetrics(nil), testMaxValue, "", ready)
	w := ts.do("PUT", "/kv/k", "one")
	var put struct{ Version string }
	json.Unmarshal(w.Body.Bytes(), &put)
	if put.Version == "" {
		t.Fatalf("PUT on a versioned bucket: got %s, want a version", w.Body)
	}
	ts.do("PUT", "/kv/k", "two")
	if w := ts.do("GET", "/kv/k?version="+put.Version, ""); w.Body.String() != "one" || w.Header().Get("X-Version-Id") != put.Version {
		t.Errorf("GET ?version: got %q, X-Version-Id %q", w.Body, w.Header().Get("X-Version-Id"))
	}
	if w := ts.do("HEAD", "/kv/k", ""); w.Header().Get("X-Version-Id") == put.Version || w.Header().Get("X-Version-Id") == "" {
		t.Errorf("HEAD X-Version-Id: got %q, want the newest version", w.Header().Get("X-Version-Id"))
	}
	w = ts.do("GET", "/kv/k?versions&limit=1", "")
	var list struct {
		Versions []map[string]any
		Next     string `json:"next_cursor"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list.Versions) != 1 || list.Next == "" {
		t.Fatalf("GET ?versions&limit=1: got %s", w.Body)
	}
	for _, field := range []string{"version", "size", "etag", "last_modified", "latest", "deleted"} {
		if _, ok := list.Versions[0][field]; !ok {
			t.Errorf("a version lacks %q: %v", field, list.Versions[0])
		}
	}
	w = ts.do("GET", "/kv/k?versions&limit=1&cursor="+list.Next, "")
	if !strings.Contains(w.Body.String(), put.Version) || strings.Contains(w.Body.String(), "next_cursor") {
		t.Errorf("second page: got %s, want the first version and no next_cursor", w.Body)
	}
	wantError(t, ts.do("GET", "/kv/k?version=has%20space", ""), 400)
	wantError(t, ts.do("GET", "/kv/k?version=nonsense", ""), 400)
	wantError(t, ts.do("GET", "/kv/k?version=v9999", ""), 404)
	if w := ts.do("DELETE", "/kv/k?version="+put.Version, ""); w.Code != 204 {
		t.Errorf("DELETE ?version: got %d", w.Code)
	}
	wantError(t, ts.do("GET", "/kv/k?version="+put.Version, ""), 404)
	wantError(t, ts.do("DELETE", "/kv/k?version="+put.Version, ""), 404)
}

func TestAuthToken(t *testing.T) {
	ts := newTestServer(t)
	st, _, _ := newFakeStore(t)
	ts.h = newServer(slog.New(slog.NewJSONHandler(ts.log, nil)), st, newMetrics(nil), testMaxValue, "s3cr3t-token", ts.up)
	for _, tt := range []struct {
		method, target, auth string
		status               int
	}{
		{"PUT", "/kv/k", "", 401},
		{"PUT", "/kv/k", "Bearer wrong", 401},
		{"PUT", "/kv/k", "s3cr3t-token", 401},
		{"PUT", "/kv/k", "bearer s3cr3t-token", 401},
		{"GET", "/kv", "", 401},
		{"GET", "/metrics", "", 401},
		{"GET", "/kv/a//b", "", 401}, // no hint about keys before authentication
		{"PUT", "/kv/k", "Bearer s3cr3t-token", 200},
		{"GET", "/kv/k", "Bearer s3cr3t-token", 200},
		{"GET", "/metrics", "Bearer s3cr3t-token", 200},
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
	} {
		w := ts.do(tt.method, tt.target, "v", "Authorization", tt.auth)
		if w.Code != tt.status {
			t.Errorf("%s %s with %q: got %d, want %d", tt.method, tt.target, tt.auth, w.Code, tt.status)
		}
		if tt.status == 401 {
			wantError(t, w, 401)
			if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer")
			}
		}
	}
	if strings.Contains(ts.log.String(), "s3cr3t-token") {
		t.Error("the log holds the token")
	}
}

// FuzzKeyPath sends any path under /kv/ through the handler: no 5xx, no panic, and a key that is accepted
// stores exactly the value, under an object name that maps back to the key and fits S3.
func FuzzKeyPath(f *testing.F) {
	for _, s := range []string{"a", "a/b", "a%2Fb", "%2e%2e/x", "a//b", "ü/%C3%BC", "%ff", "a!b/!!", "%00", "@/.x",
		strings.Repeat("k", 1010), "a/" + strings.Repeat("b", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.ParseRequestURI("/kv/" + raw)
		if err != nil {
			return // net/http answers 400 before kv sees it
		}
		u.RawQuery = "" // the key is the subject here (a query can make a good key's PUT a 400)
		ts := newTestServer(t)
		r := httptest.NewRequest("PUT", "/", strings.NewReader("value"))
		r.URL, r.RequestURI = u, u.RequestURI()
		w := httptest.NewRecorder()
		ts.h.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("PUT %q: got %d %s", raw, w.Code, w.Body)
		}
		key, _ := strings.CutPrefix(u.Path, "/kv/")
		if (w.Code == 200) != (checkKey(key, false) == nil) {
			t.Fatalf("PUT %q: got %d, but checkKey says %v", raw, w.Code, checkKey(key, false))
		}
		if w.Code != 200 {
			return
		}
		if got, ok := keyOf(valuePrefix, valueName(key)); !ok || got != key {
			t.Fatalf("key %q: object %q maps back to %q, %v", key, valueName(key), got, ok)
		}
		if n := len(indexKey(key, time.Now())); n > maxObjectKey {
			t.Fatalf("key %q: index entry of %d bytes", key, n)
		}
		if v, err := get(t, newStore(ts.s3, "test", time.Second, nil), key); err != nil || v != "value" {
			t.Fatalf("key %q: read back %q, %v", key, v, err)
		}
	})
}

func FuzzParseTTL(f *testing.F) {
	for _, s := range []string{"30s", "1", "0", "-1", "1ms", "1h30m", "8760h", "99999999999999999999", "1e9", "+5", "", "5 s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseTTL(s)
		if err == nil && (d < time.Second || d > maxTTL) {
			t.Fatalf("parseTTL(%q) = %v, outside [1s, %v]", s, d, maxTTL)
		}
		if err != nil && !strings.Contains(err.Error(), "30s") {
			t.Fatalf("parseTTL(%q): the error does not show the accepted form: %v", s, err)
		}
	})
}

func FuzzRequestID(f *testing.F) {
	for _, s := range []string{"abc-123", "", "has space", strings.Repeat("x", 65), "ünï", "a\tb", "\x7f"} {
		f.Add(s)
	}
	ts := newTestServer(f)
	f.Fuzz(func(t *testing.T, id string) {
		r := httptest.NewRequest("GET", "/healthz", nil)
		r.Header["X-Request-Id"] = []string{id}
		w := httptest.NewRecorder()
		ts.h.ServeHTTP(w, r)
		got := w.Header().Get("X-Request-ID")
		if !token(got, 64) || (got == id) != token(id, 64) {
			t.Fatalf("X-Request-ID %q: answered with %q", id, got)
		}
	})
}
