// Package tests drives the real kv binary over HTTP against a real S3 (MinIO): black-box, end to end. It
// covers what only a running process shows: persistence through MinIO, MinIO's own answers, startup, logs,
// signals, outages and clients on real sockets. Behaviour that a handler or the store shows on its own is
// tested in the main package.
//
// With S3_ENDPOINT (and S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY) set, it builds the binary and starts its own
// instances. With KV_URL set instead, it tests that running service (docker-compose run test), once it is
// ready, and skips what needs its own instance. With neither, every test skips and says why. Each test deletes
// the keys it wrote.
package tests

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// client bounds every request of the tests: a hang is a failure, not a stuck run.
var client = &http.Client{Timeout: 30 * time.Second}

var (
	binary  string // the built service, when the tests start their own
	shared  string // base URL of the service most tests use
	skipWhy string
	skipped atomic.Int64
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		switch {
		case os.Getenv("KV_URL") != "":
			shared = strings.TrimRight(os.Getenv("KV_URL"), "/")
			if err := waitReady(shared, time.Minute, nil); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		case os.Getenv("S3_ENDPOINT") != "":
			dir, err := os.MkdirTemp("", "kv-e2e")
			if err != nil {
				panic(err)
			}
			defer os.RemoveAll(dir)
			binary = filepath.Join(dir, "kv")
			if out, err := exec.Command("go", "build", "-o", binary, "..").CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "building kv: %v\n%s", err, out)
				return 1
			}
			kv, err := start(nil, nil, true)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer kv.stop()
			shared = kv.url
		default:
			skipWhy = "neither S3_ENDPOINT (the tests start kv against that S3) nor KV_URL (a running kv) is set"
		}
		code := m.Run()
		if n := skipped.Load(); n > 0 {
			reportSkips(fmt.Sprintf("kv/tests: %d tests skipped: %s\n", n, cmp.Or(skipWhy, ownInstance)))
		}
		return code
	}())
}

// reportSkips prints line; go test shows a passing package's output only with -v, so the line also goes to
// the terminal, when there is one.
func reportSkips(line string) {
	fmt.Print(line)
	if st, err := os.Stdout.Stat(); testing.Verbose() || err != nil || st.Mode()&os.ModeCharDevice != 0 {
		return
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		fmt.Fprint(tty, line)
		tty.Close()
	}
}

// needService skips when there is no service to test, except under CI, where a skip would hide a gap.
func needService(t testing.TB) {
	t.Helper()
	if skipWhy != "" && os.Getenv("CI") != "" {
		t.Fatal("CI is set, so these tests must run: " + skipWhy)
	}
	if skipWhy != "" {
		skipped.Add(1)
		t.Skip(skipWhy)
	}
}

const ownInstance = "they start instances of kv of their own: set S3_ENDPOINT rather than KV_URL"

func needOwnInstance(t testing.TB) {
	t.Helper()
	needService(t)
	if binary == "" {
		skipped.Add(1)
		t.Skip(ownInstance)
	}
}

// instance is a running kv process.
type instance struct {
	url  string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// start runs the binary on a free port with the test environment plus env and, when wait is set, waits until
// it is ready.
func start(t testing.TB, env map[string]string, wait bool) (*instance, error) {
	port := strings.TrimPrefix(freeAddr(), "127.0.0.1:")
	cmd := exec.Command(binary)
	cmd.Env = append(os.Environ(), "PORT="+port, "S3_BUCKET="+bucket(), "TTL_SWEEP_INTERVAL=1s", "LOG_LEVEL=debug")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	kv := &instance{url: "http://127.0.0.1:" + port, cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = kv.logs, kv.logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { kv.done <- cmd.Wait() }()
	if t != nil {
		t.Cleanup(func() { kv.stop() })
	}
	if !wait {
		return kv, nil
	}
	if err := waitReady(kv.url, 30*time.Second, kv.done); err != nil {
		kv.stop()
		return nil, fmt.Errorf("%v\n%s", err, kv.logs)
	}
	return kv, nil
}

// waitReady polls base's /readyz until it answers 200, for at most d, or until exited yields.
func waitReady(base string, d time.Duration, exited chan error) error {
	for timeout := time.After(d); ; {
		select {
		case err := <-exited:
			return fmt.Errorf("kv exited before it was ready: %v", err)
		case <-timeout:
			return fmt.Errorf("kv at %s not ready after %v", base, d)
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
		}
		if err == nil && resp.StatusCode == 200 {
			return nil
		}
	}
}

// stop sends SIGTERM and returns the process's exit error (nil for exit 0).
func (kv *instance) stop() error {
	if kv.cmd.ProcessState != nil {
		return nil
	}
	kv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-kv.done:
		return err
	case <-time.After(20 * time.Second):
		kv.cmd.Process.Kill()
		return fmt.Errorf("kv did not stop within 20s after SIGTERM")
	}
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func bucket() string { return cmp.Or(os.Getenv("S3_BUCKET"), "kv-e2e") }

// keyPrefix gives each test its own keys, so tests can share a bucket and run again, and deletes them through
// the shared service when the test ends (a TTL key's index entry goes with its sweep).
func keyPrefix(t testing.TB) string {
	p := fmt.Sprintf("e2e-%s-%x/", strings.ReplaceAll(t.Name(), "/", "-"), rand.Uint32())
	t.Cleanup(func() {
		for cursor := ""; shared != ""; {
			var page struct {
				Keys []string
				Next string `json:"next_cursor"`
			}
			r := call(t, "GET", shared+"/kv?limit=1000&prefix="+url.QueryEscape(p)+"&cursor="+cursor, nil)
			if json.Unmarshal(r.body, &page) != nil {
				return
			}
			for _, k := range page.Keys {
				call(t, "DELETE", kvURL(shared, k), nil)
			}
			if cursor = page.Next; cursor == "" {
				return
			}
		}
	})
	return p
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// call sends one request; header is name, value pairs.
func call(t testing.TB, method, u string, body []byte, header ...string) response {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if tok := os.Getenv("AUTH_TOKEN"); tok != "" && binary == "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+tok) // the running service (KV_URL) may be guarded
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// kvURL escapes each segment of key into a /kv/ URL.
func kvURL(base, key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return base + "/kv/" + strings.Join(segs, "/")
}

// s3Client talks to the tests' S3 directly, as kv's own client does (see newS3Client), to see what kv left in
// the bucket, and for the benchmark's yardstick.
func s3Client(t testing.TB) *s3.Client {
	t.Helper()
	creds := aws.Credentials{AccessKeyID: os.Getenv("S3_ACCESS_KEY"), SecretAccessKey: os.Getenv("S3_SECRET_KEY")}
	return s3.New(s3.Options{
		Region:                     cmp.Or(os.Getenv("S3_REGION"), "us-east-1"),
		BaseEndpoint:               aws.String(os.Getenv("S3_ENDPOINT")),
		UsePathStyle:               true,
		Credentials:                aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil }),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}, func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
	})
}

// objects lists the names of the objects in bucket under prefix.
func objects(t testing.TB, client *s3.Client, bucket, prefix string) []string {
	t.Helper()
	var names []string
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatalf("listing %s/%s: %v", bucket, prefix, err)
		}
		for _, o := range out.Contents {
			names = append(names, *o.Key)
		}
	}
	return names
}

// left counts the values and index entries of keys under p still in the bucket.
func left(t testing.TB, client *s3.Client, p string) int {
	index := objects(t, client, bucket(), "t/")
	index = slices.DeleteFunc(index, func(o string) bool { return !strings.Contains(o, p) })
	return len(objects(t, client, bucket(), "v/"+p)) + len(index)
}

// TestPutGetRoundTrip: values and keys of every kind go through kv and MinIO and come back byte for byte,
// with their headers.
func TestPutGetRoundTrip(t *testing.T) {
	needService(t)
	p := keyPrefix(t)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	tests := []struct {
		name, key string
		value     []byte
	}{
		{"text", p + "greeting", []byte("hello world")},
		{"binary", p + "binary", all},
		{"empty", p + "empty", []byte{}},
		{"unicode key", p + "ünïcødé/ключ/鍵", []byte("unicode")},
		{"slashes", p + "a/b/c/d", []byte("deep")},
		{"spaces and symbols", p + "sp ace+plus%pct?q#h&amp;=eq", []byte("odd")},
		{"at sign and bang", p + "@/!!x/a!", []byte("at")},
		{"large", p + "large", bytes.Repeat([]byte("0123456789abcdef"), 64<<10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := kvURL(shared, tt.key)
			r := call(t, "PUT", u, tt.value, "Content-Type", "application/x-test")
			if m := r.json(t); r.status != 200 || m["key"] != tt.key || m["size"] != float64(len(tt.value)) {
				t.Fatalf("PUT: got %d %s, want 200, key %q, size %d", r.status, r.body, tt.key, len(tt.value))
			}
			g := call(t, "GET", u, nil)
			if g.status != 200 || !bytes.Equal(g.body, tt.value) {
				t.Fatalf("GET: got %d, %d bytes, want 200, the %d bytes written", g.status, len(g.body), len(tt.value))
			}
			if g.header.Get("Content-Type") != "application/x-test" || g.header.Get("ETag") != r.header.Get("ETag") ||
				g.header.Get("Content-Length") != strconv.Itoa(len(tt.value)) {
				t.Errorf("GET headers: got %v, want the type, ETag and length written", g.header)
			}
		})
	}
	keys := call(t, "GET", shared+"/kv?prefix="+url.QueryEscape(p)+"&limit=3", nil).json(t)
	if n := len(keys["keys"].([]any)); n != 3 || keys["next_cursor"] == nil {
		t.Errorf("a page of 3 of %d keys: got %v", len(tests), keys)
	}
}

// TestStorageRejections: what only MinIO refuses (it keeps each path segment as a folder name of at most
// 255 bytes) is a 400 naming the limit, and nothing is written.
func TestStorageRejections(t *testing.T) {
	needService(t)
	p := keyPrefix(t)
	for _, method := range []string{"PUT", "GET"} {
		if r := call(t, method, kvURL(shared, p+strings.Repeat("s", 256)+"/x"), []byte("v")); r.status != 400 {
			t.Errorf("%s of a 256-byte segment: got %d %s, want 400", method, r.status, r.body)
		}
	}
	if r := call(t, "PUT", kvURL(shared, p+strings.Repeat("s", 200)+"/x"), []byte("v")); r.status != 200 {
		t.Errorf("a 200-byte segment: got %d %s, want 200", r.status, r.body)
	}
	if keys := call(t, "GET", shared+"/kv?prefix="+url.QueryEscape(p), nil).json(t)["keys"].([]any); len(keys) != 1 {
		t.Errorf("keys under the test's prefix: got %v, want only the one written", keys)
	}
}

func TestPersistsAcrossRestart(t *testing.T) {
	needOwnInstance(t)
	kv, err := start(t, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	key := keyPrefix(t) + "durable"
	value := []byte("survives a restart \x00\xff")
	if r := call(t, "PUT", kvURL(kv.url, key), value); r.status != 200 {
		t.Fatalf("PUT: got %d", r.status)
	}
	if err := kv.stop(); err != nil {
		t.Fatalf("SIGTERM: got %v, want exit 0", err)
	}
	kv2, err := start(t, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if g := call(t, "GET", kvURL(kv2.url, key), nil); g.status != 200 || !bytes.Equal(g.body, value) {
		t.Errorf("after restart: got %d %q, want %q", g.status, g.body, value)
	}
}

// TestLogs: every line is JSON, access lines carry the request ID, and no secret, token or value is logged.
func TestLogs(t *testing.T) {
	needOwnInstance(t)
	token := fmt.Sprintf("token-that-must-not-be-logged-%x", rand.Uint64())
	kv, err := start(t, map[string]string{"AUTH_TOKEN": token}, true)
	if err != nil {
		t.Fatal(err)
	}
	auth := []string{"Authorization", "Bearer " + token}
	secretValue := fmt.Sprintf("value-that-must-not-be-logged-%x", rand.Uint64())
	u := kvURL(kv.url, keyPrefix(t)+"v")
	if r := call(t, "PUT", u, []byte(secretValue)); r.status != 401 {
		t.Fatalf("PUT without the token: got %d, want 401", r.status)
	}
	if r := call(t, "PUT", u, []byte(secretValue), auth...); r.status != 200 {
		t.Fatalf("PUT with the token: got %d %s", r.status, r.body)
	}
	r := call(t, "GET", kv.url+"/kv/"+keyPrefix(t)+"missing", nil, append(auth, "X-Request-ID", "trace-me-42")...)
	if r.header.Get("X-Request-ID") != "trace-me-42" {
		t.Errorf("X-Request-ID: got %q, want the one sent", r.header.Get("X-Request-ID"))
	}
	if err := kv.stop(); err != nil {
		t.Fatalf("SIGTERM: got %v, want exit 0", err)
	}
	logs := kv.logs.String()
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %s", line)
		}
	}
	if !strings.Contains(logs, `"request_id":"trace-me-42","method":"GET","route":"GET /kv/{key...}","status":404`) {
		t.Error("the access log lacks the request's line")
	}
	for what, s := range map[string]string{"the S3 secret": os.Getenv("S3_SECRET_KEY"), "the token": token,
		"a value": secretValue} {
		if s == "" || strings.Contains(logs, s) {
			t.Errorf("the log holds %s (or it is empty)", what)
		}
	}
}

// TestStartupMistakes: credentials MinIO refuses stop kv at once, naming the variables to check.
func TestStartupMistakes(t *testing.T) {
	needOwnInstance(t)
	kv, err := start(t, map[string]string{"S3_SECRET_KEY": "not-the-secret", "STARTUP_TIMEOUT": "60s"}, false)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-kv.done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 ||
			!strings.Contains(kv.logs.String(), "check S3_ACCESS_KEY and S3_SECRET_KEY") {
			t.Errorf("exit: %v, output:\n%s\nwant exit 1 naming S3_ACCESS_KEY and S3_SECRET_KEY", err, kv.logs)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("kv still running 30 s after MinIO refused its credentials:\n%s", kv.logs)
	}
}

// TestTTLReclaimed: short-lived keys written as fast as 16 clients can, and one whose upload outlasts its TTL,
// all leave the bucket (values and index entries) once they expire, the sweep making at most two S3 calls per
// key and a few per page. How long that took is logged.
func TestTTLReclaimed(t *testing.T) {
	needOwnInstance(t)
	kv, err := start(t, map[string]string{"LOG_LEVEL": "warn", "CACHE_MAX_BYTES": "0"}, true)
	if err != nil {
		t.Fatal(err)
	}
	p, next, slow := keyPrefix(t), make(chan int), make(chan error, 1)
	go func() { slow <- slowUpload(kvURL(kv.url, p+"slow")+"?ttl=1s", 3*time.Second) }()
	var wg sync.WaitGroup
	t0 := time.Now()
	for range 16 {
		wg.Go(func() {
			for i := range next {
				r := call(t, "PUT", kvURL(kv.url, fmt.Sprintf("%s%04d", p, i))+"?ttl=1s", []byte("brief"))
				if r.status != 200 {
					t.Errorf("PUT: got %d %s", r.status, r.body)
				}
			}
		})
	}
	for i := range 300 {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := <-slow; err != nil {
		t.Fatalf("the slow upload: %v", err)
	}
	written, s3c := time.Since(t0), s3Client(t)
	eventually(t, time.Minute, "the bucket clean of the TTL values and their index entries", func() bool {
		return left(t, s3c, p) == 0
	})
	metrics := string(call(t, "GET", kv.url+"/metrics", nil).body)
	sweepCalls := 0
	for _, m := range regexp.MustCompile(`kv_s3_request_duration_seconds_count\{operation="(\w+)",code="\d+"\} (\d+)`).
		FindAllStringSubmatch(metrics, -1) {
		if n, _ := strconv.Atoi(m[2]); !slices.Contains([]string{"PutObject", "GetObject", "HeadBucket"}, m[1]) {
			sweepCalls += n // the sweep's and the listing's
		}
	}
	if sweepCalls > 2*301+20 {
		t.Errorf("the sweep and listing made %d S3 calls for 301 keys, want at most two per key and a few per page",
			sweepCalls)
	}
	t.Logf("301 TTL keys written in %v; bucket clean of them %v after the last write; %d S3 calls besides PUTs",
		written.Round(time.Millisecond), (time.Since(t0) - written).Round(time.Millisecond), sweepCalls)
}

// slowUpload PUTs ten bytes to u over d, a byte at a time, and wants a 200.
func slowUpload(u string, d time.Duration) error {
	pr, pw := io.Pipe()
	go func() {
		for range 10 {
			time.Sleep(d / 10)
			pw.Write([]byte("x"))
		}
		pw.Close()
	}()
	req, err := http.NewRequest("PUT", u, pr)
	if err != nil {
		return err
	}
	req.ContentLength = 10
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("got %s, want 200", resp.Status)
	}
	return nil
}
