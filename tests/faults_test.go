package tests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// minioBinary finds the MinIO server the fault tests start and kill themselves.
func minioBinary(t *testing.T) string {
	t.Helper()
	home, _ := os.UserHomeDir()
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	for _, p := range []string{os.Getenv("MINIO_BIN"), filepath.Join(strings.TrimSpace(string(gopath)), "bin", "minio"),
		filepath.Join(home, ".cache", "kvbench", "minio")} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI is set, so the fault tests must run: set MINIO_BIN to a MinIO server binary")
	}
	t.Skip("no MinIO binary (set MINIO_BIN): the fault tests start and kill MinIO themselves")
	return ""
}

type minio struct {
	bin, dir, addr, user, pass string
	cmd                        *exec.Cmd
}

// startMinIO runs a MinIO of the test's own on addr ("" picks a port), keeping its data in dir.
func startMinIO(t *testing.T, m *minio) {
	t.Helper()
	if m.addr == "" {
		m.addr = freeAddr(t)
		m.dir, m.user, m.pass = t.TempDir(), "fault-admin", fmt.Sprintf("fault-secret-%d", time.Now().UnixNano())
	}
	m.cmd = exec.Command(m.bin, "server", "--quiet", "--address", m.addr, "--console-address", freeAddr(t), m.dir)
	m.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.user, "MINIO_ROOT_PASSWORD="+m.pass)
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.cmd.Process.Kill(); m.cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + m.addr + "/minio/health/live"); err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("MinIO did not start in 30s")
		}
	}
}

func (m *minio) env(bucket string) map[string]string {
	return map[string]string{"S3_ENDPOINT": "http://" + m.addr, "S3_ACCESS_KEY": m.user, "S3_SECRET_KEY": m.pass, "S3_BUCKET": bucket}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// scrape reads one unlabelled value from the service's /metrics.
func scrape(t *testing.T, base, name string) float64 {
	t.Helper()
	body := call(t, "GET", base+"/metrics", nil).body
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func rssMiB(t *testing.T, pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS for pid %d", pid)
	}
	kb, _ := strconv.Atoi(string(m[1]))
	return kb / 1024
}

// wantUnavailable checks a 503 with Retry-After that came within bound.
func wantUnavailable(t *testing.T, r response, took, bound time.Duration) {
	t.Helper()
	if r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Errorf("got %d (Retry-After %q) %s, want 503 with Retry-After", r.status, r.header.Get("Retry-After"), r.body)
	}
	if took > bound {
		t.Errorf("took %v, want at most %v", took, bound)
	}
}

// TestMinIOKilledDuringWrites: SIGKILL MinIO under a write load, then restart it. While it is down, requests
// get 503 with Retry-After within S3_TIMEOUT; afterwards every acknowledged PUT reads back byte-exact and
// the same kv process serves again.
func TestMinIOKilledDuringWrites(t *testing.T) {
	needOwnInstance(t)
	m := &minio{bin: minioBinary(t)}
	startMinIO(t, m)
	env := m.env("faults")
	env["S3_TIMEOUT"] = "2s"
	kv, err := start(t, env)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	var acked sync.Map
	var oks, unavailable atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("private-customer-key-%d-%d", w, n)
				value := bytes.Repeat([]byte(key+";"), 1+n%2000)
				req, _ := http.NewRequest("PUT", kvURL(kv.url, key), bytes.NewReader(value))
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("PUT %s: %v after %v (a hang or a crash)", key, err, time.Since(start))
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch took := time.Since(start); {
				case resp.StatusCode == 200:
					acked.Store(key, value)
					oks.Add(1)
				case resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "" && took < 4*time.Second:
					unavailable.Add(1)
				default:
					t.Errorf("PUT %s: got %d after %v, want 200, or 503 with Retry-After within S3_TIMEOUT", key, resp.StatusCode, took)
				}
			}
		})
	}
	time.Sleep(time.Second)
	m.cmd.Process.Kill() // SIGKILL, mid-write
	m.cmd.Wait()
	time.Sleep(500 * time.Millisecond)
	t0 := time.Now()
	wantUnavailable(t, call(t, "GET", kvURL(kv.url, "never-written"), nil), time.Since(t0), 4*time.Second) // not cached
	if r := call(t, "GET", kv.url+"/readyz", nil); r.status != 503 {
		t.Errorf("readyz with MinIO down: got %d, want 503", r.status)
	}
	time.Sleep(2 * time.Second)
	startMinIO(t, m) // same data, same address
	for deadline := time.Now().Add(30 * time.Second); call(t, "GET", kv.url+"/readyz", nil).status != 200; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("kv not ready 30s after MinIO came back")
		}
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	if kv.cmd.ProcessState != nil {
		t.Fatalf("kv exited: %v", kv.cmd.ProcessState)
	}
	if oks.Load() == 0 || unavailable.Load() == 0 {
		t.Fatalf("%d PUTs acknowledged, %d got 503: the test did not see both sides of the outage", oks.Load(), unavailable.Load())
	}
	lost := 0
	acked.Range(func(k, v any) bool {
		if g := call(t, "GET", kvURL(kv.url, k.(string)), nil); g.status != 200 || !bytes.Equal(g.body, v.([]byte)) {
			lost++
		}
		return true
	})
	if lost > 0 {
		t.Errorf("%d of %d acknowledged PUTs did not read back byte-exact", lost, oks.Load())
	}
	if logs := kv.logs.String(); strings.Contains(logs, "private-customer-key") || !strings.Contains(logs, "storage unavailable") {
		t.Error("the log of the outage holds a key, or lacks the storage errors")
	}
	t.Logf("%d PUTs acknowledged and read back, %d answered 503 during the outage", oks.Load(), unavailable.Load())
}

// stallProxy forwards TCP to a backend until stalled, then holds every byte until released.
type stallProxy struct {
	ln      net.Listener
	stalled atomic.Bool
}

func newStallProxy(t *testing.T, backend string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				b, err := net.Dial("tcp", backend)
				if err != nil {
					c.Close()
					return
				}
				go p.pipe(b, c)
				p.pipe(c, b)
			}()
		}
	}()
	return p
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.stalled.Load() {
			time.Sleep(10 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestMinIOStalled: a backend that stops answering turns into 503 within S3_TIMEOUT, and goroutines and
// memory come back down once it answers again.
func TestMinIOStalled(t *testing.T) {
	needOwnInstance(t)
	backend := strings.TrimPrefix(strings.TrimPrefix(os.Getenv("S3_ENDPOINT"), "http://"), "https://")
	proxy := newStallProxy(t, backend)
	kv, err := start(t, map[string]string{"S3_ENDPOINT": "http://" + proxy.ln.Addr().String(), "S3_TIMEOUT": "1s",
		"CACHE_MAX_BYTES": "0"})
	if err != nil {
		t.Fatal(err)
	}
	p := keyPrefix(t)
	call(t, "PUT", kvURL(kv.url, p+"k"), []byte("before"))
	baseGoroutines, baseRSS := scrape(t, kv.url, "go_goroutines"), rssMiB(t, kv.cmd.Process.Pid)
	proxy.stalled.Store(true)
	for round := range 3 {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				method, body := "GET", []byte(nil)
				if i%2 == 1 {
					method, body = "PUT", bytes.Repeat([]byte("x"), 64<<10)
				}
				t0 := time.Now()
				r := call(t, method, kvURL(kv.url, fmt.Sprintf("%sk%d-%d", p, round, i)), body)
				wantUnavailable(t, r, time.Since(t0), 3*time.Second)
			})
		}
		wg.Wait()
	}
	proxy.stalled.Store(false)
	if g := call(t, "GET", kvURL(kv.url, p+"k"), nil); string(g.body) != "before" {
		t.Errorf("after the stall: got %d %q, want the value back", g.status, g.body)
	}
	time.Sleep(2 * time.Second) // let the abandoned calls' connections close
	if g := scrape(t, kv.url, "go_goroutines"); g > baseGoroutines+20 {
		t.Errorf("goroutines: %v before the stall, %v after it", baseGoroutines, g)
	}
	if rss := rssMiB(t, kv.cmd.Process.Pid); rss > baseRSS+64 {
		t.Errorf("RSS: %d MiB before the stall, %d MiB after it", baseRSS, rss)
	}
}

// TestSIGTERMUnderLoad: accepted requests complete, new connections are refused, the exit is 0 and prompt.
func TestSIGTERMUnderLoad(t *testing.T) {
	needOwnInstance(t)
	kv, err := start(t, map[string]string{"SHUTDOWN_TIMEOUT": "5s"})
	if err != nil {
		t.Fatal(err)
	}
	p := keyPrefix(t)
	// A slow upload that is under way when SIGTERM arrives.
	pr, pw := io.Pipe()
	slow := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest("PUT", kvURL(kv.url, p+"slow"), pr)
		req.ContentLength = 10
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			slow <- response{status: -1, body: []byte(err.Error())}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- response{status: resp.StatusCode, body: b}
	}()
	pw.Write([]byte("slow-"))
	// A GET load on its own connections.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var served atomic.Int64
	for range 4 {
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{}}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(kvURL(kv.url, p+"missing"))
				if err != nil {
					if !errors.Is(err, syscall.ECONNREFUSED) {
						t.Errorf("GET during shutdown: %v, want an answer or a refused connection", err)
					}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				served.Add(1)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	kv.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(kv.url, "http://"), time.Second); err == nil {
		c.Close()
		t.Error("a new connection was accepted after SIGTERM")
	}
	pw.Write([]byte("done!"))
	pw.Close()
	if r := <-slow; r.status != 200 {
		t.Errorf("the upload in flight at SIGTERM: got %d %s, want 200", r.status, r.body)
	}
	select {
	case err := <-kv.done:
		if err != nil {
			t.Errorf("exit: %v, want 0", err)
		}
		if took := time.Since(t0); took > 5*time.Second {
			t.Errorf("exit took %v, SHUTDOWN_TIMEOUT is 5s", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kv did not exit within 10s of SIGTERM")
	}
	close(stop)
	wg.Wait()
	if served.Load() == 0 {
		t.Error("the GET load got no answers at all")
	}
}

// TestConcurrentWritersOneKey: the last value is exactly one writer's, no reader sees a mix, and of 50
// writers with the same If-Match exactly one wins.
func TestConcurrentWritersOneKey(t *testing.T) {
	needService(t)
	u := kvURL(shared, keyPrefix(t)+"contended")
	value := func(w int) []byte { return bytes.Repeat([]byte{byte('A' + w%26), byte('0' + w/26)}, 16<<10) }
	isOne := func(b []byte) bool {
		return len(b) == 32<<10 && bytes.Equal(b, bytes.Repeat(b[:2], 16<<10))
	}
	call(t, "PUT", u, value(0))
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if g := call(t, "GET", u, nil); g.status != 200 || !isOne(g.body) {
					t.Errorf("a reader got %d and %d bytes that are not one writer's value", g.status, len(g.body))
					return
				}
			}
		})
	}
	var writers sync.WaitGroup
	for w := range 100 {
		writers.Go(func() {
			if r := call(t, "PUT", u, value(w)); r.status != 200 {
				t.Errorf("writer %d: got %d %s", w, r.status, r.body)
			}
		})
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	g := call(t, "GET", u, nil)
	if !isOne(g.body) {
		t.Fatalf("final value is not one writer's")
	}

	etag := g.header.Get("ETag")
	var wins, refused atomic.Int64
	var wg sync.WaitGroup
	for w := range 50 {
		wg.Go(func() {
			// Values no one wrote before: a winner that rewrote the current bytes would keep its ETag (an MD5),
			// and a second If-Match writer would rightly win too.
			switch r := call(t, "PUT", u, value(100+w), "If-Match", etag); r.status {
			case 200:
				wins.Add(1)
			case 412:
				refused.Add(1)
			default:
				t.Errorf("If-Match writer %d: got %d %s", w, r.status, r.body)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 || refused.Load() != 49 {
		t.Errorf("50 writers with one If-Match: %d won and %d got 412, want 1 and 49", wins.Load(), refused.Load())
	}
}

// TestHostileClients: dribbled headers, huge headers, endless chunked bodies, bodies that stop arriving and
// bodies longer than their Content-Length all end at the server's limits, with no 5xx and no goroutines
// left behind.
func TestHostileClients(t *testing.T) {
	needOwnInstance(t)
	kv, err := start(t, map[string]string{"MAX_VALUE_BYTES": "65536", "CLIENT_TIMEOUT": "2s"})
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(kv.url, "http://")
	base := scrape(t, kv.url, "go_goroutines")
	p := keyPrefix(t)
	var wg sync.WaitGroup
	wg.Go(func() { // headers one byte at a time: cut at ReadHeaderTimeout (10s)
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		t0 := time.Now()
		for _, b := range []byte("GET /kv/x HTTP/1.1\r\nHost: kv\r\nX-Slow: " + strings.Repeat("a", 1000)) {
			if _, err := c.Write([]byte{b}); err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
			if time.Since(t0) > 20*time.Second {
				t.Error("a client dribbling headers was still connected after 20s")
				return
			}
		}
		t.Logf("dribbled headers cut after %v (CLIENT_TIMEOUT=2s)", time.Since(t0).Round(time.Millisecond))
	})
	wg.Go(func() { // a body that stops arriving: 408 once CLIENT_TIMEOUT passes, nothing stored
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		fmt.Fprintf(c, "PUT /kv/%sstalled HTTP/1.1\r\nHost: kv\r\nContent-Length: 100\r\n\r\n0123456789", p)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 408 {
			t.Errorf("a stalled upload: got %v, %v, want 408", resp, err)
		}
	})
	wg.Go(func() { // 1 MiB of headers
		r := rawRequest(t, addr, "GET /kv/x HTTP/1.1\r\nHost: kv\r\nX-Big: "+strings.Repeat("a", 1<<20)+"\r\n\r\n")
		if !strings.HasPrefix(r, "HTTP/1.1 431") {
			t.Errorf("huge headers: got %.40q, want 431", r)
		}
	})
	wg.Go(func() { // an endless chunked body
		pr, pw := io.Pipe()
		go func() {
			chunk := bytes.Repeat([]byte("z"), 32<<10)
			for {
				if _, err := pw.Write(chunk); err != nil {
					return
				}
			}
		}()
		req, _ := http.NewRequest("PUT", kvURL(kv.url, p+"endless"), pr)
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		pr.Close()
		if err != nil {
			t.Errorf("endless body: %v", err)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != 411 {
			t.Errorf("endless chunked body: got %d, want 411 (kv needs the length first)", resp.StatusCode)
		}
	})
	wg.Go(func() { // a body longer than its Content-Length: the rest is read as the next request
		r := rawRequest(t, addr, "PUT /kv/"+p+"short HTTP/1.1\r\nHost: kv\r\nContent-Length: 5\r\n\r\nhelloGARBAGE-NOT-HTTP\r\n\r\n")
		if !strings.HasPrefix(r, "HTTP/1.1 200") || strings.Contains(r, " 50") {
			t.Errorf("longer body: got %q, want 200 for the declared 5 bytes", r)
		}
	})
	wg.Wait()
	if g := call(t, "GET", kvURL(kv.url, p+"short"), nil); string(g.body) != "hello" {
		t.Errorf("longer body: stored %q, want the declared 5 bytes", g.body)
	}
	wantError(t, call(t, "GET", kvURL(kv.url, p+"endless"), nil), 404)
	wantError(t, call(t, "GET", kvURL(kv.url, p+"stalled"), nil), 404)
	if logs := kv.logs.String(); strings.Contains(logs, `"level":"ERROR"`) {
		t.Errorf("hostile clients were logged as storage errors:\n%s", logs)
	}
	time.Sleep(time.Second)
	if g := scrape(t, kv.url, "go_goroutines"); g > base+5 {
		t.Errorf("goroutines: %v before, %v after the hostile clients", base, g)
	}
}

// rawRequest writes raw bytes and returns everything the server answers until it closes or goes quiet.
func rawRequest(t *testing.T, addr, raw string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return ""
	}
	defer c.Close()
	go c.Write([]byte(raw))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out bytes.Buffer
	io.Copy(&out, bufio.NewReader(c))
	return out.String()
}

// TestBucketRemoved: a bucket deleted behind kv is a storage outage (503 with Retry-After, logged with its
// cause), never a missing key; kv serves again once the bucket is back.
func TestBucketRemoved(t *testing.T) {
	needOwnInstance(t)
	name := fmt.Sprintf("kv-gone-%x", rand.Uint32())
	kv, err := start(t, map[string]string{"S3_BUCKET": name})
	if err != nil {
		t.Fatal(err)
	}
	u := kvURL(kv.url, "private-customer-key")
	etag := call(t, "PUT", u+"?ttl=1h", []byte("v")).header.Get("ETag")
	client := s3Client(t)
	var ids []types.ObjectIdentifier
	for _, o := range objects(t, client, name, "") {
		ids = append(ids, types.ObjectIdentifier{Key: aws.String(o)})
	}
	ctx := context.Background()
	if _, err := client.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &name, Delete: &types.Delete{Objects: ids}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &name}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		method, target string
		header         []string
	}{
		{"GET", u, nil}, {"HEAD", u, nil}, {"PUT", u, nil}, {"PUT", u, []string{"If-Match", etag}},
		{"PUT", u, []string{"If-None-Match", "*"}}, {"DELETE", u, nil}, {"GET", kv.url + "/kv", nil},
		{"GET", kv.url + "/readyz", nil},
	} {
		if resp := call(t, r.method, r.target, []byte("v"), r.header...); resp.status != 503 || resp.header.Get("Retry-After") == "" {
			t.Errorf("%s %s %v with the bucket gone: got %d %s, want 503 with Retry-After", r.method, r.target, r.header,
				resp.status, resp.body)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(kv.logs.String(), "NoSuchBucket"); {
		if time.Now().After(deadline) { // kv writes its log out at least every second
			t.Fatalf("log: want the cause, NoSuchBucket:\n%s", kv.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(kv.logs.String(), "private-customer-key") {
		t.Errorf("the log holds a key:\n%s", kv.logs)
	}
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		t.Fatal(err)
	}
	if r := call(t, "PUT", u, []byte("back")); r.status != 200 {
		t.Errorf("PUT once the bucket is back: got %d %s", r.status, r.body)
	}
}
