package tests

import (
	"bytes"
	"fmt"
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
)

// minioBinary finds the MinIO server the fault tests start and kill themselves.
func minioBinary(t *testing.T) string {
	t.Helper()
	home, _ := os.UserHomeDir()
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	for _, p := range []string{os.Getenv("MINIO_BIN"), filepath.Join(strings.TrimSpace(string(gopath)), "bin", "minio"),
		filepath.Join(home, ".cache", "kvbench", "minio")} {
		if _, err := os.Stat(p); p != "" && err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI is set, so the fault tests must run: set MINIO_BIN to a MinIO server binary")
	}
	skipped.Add(1)
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
		m.addr = freeAddr()
		m.dir, m.user, m.pass = t.TempDir(), "fault-admin", fmt.Sprintf("fault-secret-%d", time.Now().UnixNano())
	}
	m.cmd = exec.Command(m.bin, "server", "--quiet", "--address", m.addr, "--console-address", freeAddr(), m.dir)
	m.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+m.user, "MINIO_ROOT_PASSWORD="+m.pass)
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.cmd.Process.Kill(); m.cmd.Wait() })
	eventually(t, 30*time.Second, "MinIO answers", func() bool {
		resp, err := http.Get("http://" + m.addr + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
}

func (m *minio) env(bucket string) map[string]string {
	return map[string]string{"S3_ENDPOINT": "http://" + m.addr, "S3_ACCESS_KEY": m.user, "S3_SECRET_KEY": m.pass,
		"S3_BUCKET": bucket}
}

// eventually polls cond until it holds, failing the test after d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

// wantUnavailable checks a 503 with Retry-After that came within bound.
func wantUnavailable(t *testing.T, r response, took, bound time.Duration) {
	t.Helper()
	if r.status != 503 || r.header.Get("Retry-After") == "" || took > bound {
		t.Errorf("got %d (Retry-After %q) %s after %v, want 503 with Retry-After within %v", r.status,
			r.header.Get("Retry-After"), r.body, took, bound)
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
	kv, err := start(t, env, true)
	if err != nil {
		t.Fatal(err)
	}
	var acked sync.Map
	var oks, unavailable atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				key := fmt.Sprintf("private-customer-key-%d-%d", w, n)
				value := bytes.Repeat([]byte(key+";"), 1+n%2000)
				t0 := time.Now()
				switch r := call(t, "PUT", kvURL(kv.url, key), value); {
				case r.status == 200:
					acked.Store(key, value)
					oks.Add(1)
				case r.status == 503 && r.header.Get("Retry-After") != "" && time.Since(t0) < 4*time.Second:
					unavailable.Add(1)
				default:
					t.Errorf("PUT: got %d after %v, want 200, or 503 with Retry-After within S3_TIMEOUT", r.status,
						time.Since(t0))
					return
				}
			}
		})
	}
	eventually(t, 10*time.Second, "PUTs acknowledged", func() bool { return oks.Load() > 100 })
	m.cmd.Process.Kill() // SIGKILL, mid-write
	m.cmd.Wait()
	eventually(t, 5*time.Second, "readyz 503 with MinIO down (it asks S3 once a second)", func() bool {
		return call(t, "GET", kv.url+"/readyz", nil).status == 503
	})
	eventually(t, 10*time.Second, "PUTs answered 503", func() bool { return unavailable.Load() > 8 })
	startMinIO(t, m) // same data, same address
	before := oks.Load()
	eventually(t, 30*time.Second, "PUTs acknowledged again", func() bool { return oks.Load() > before+100 })
	stop.Store(true)
	wg.Wait()
	lost := 0
	acked.Range(func(k, v any) bool {
		if g := call(t, "GET", kvURL(kv.url, k.(string)), nil); g.status != 200 || !bytes.Equal(g.body, v.([]byte)) {
			lost++
		}
		return true
	})
	if logs := kv.logs.String(); lost > 0 || strings.Contains(logs, "private-customer-key") ||
		!strings.Contains(logs, "storage unavailable") {
		t.Errorf("%d of %d acknowledged PUTs lost; want none, and the outage logged without a key", lost, oks.Load())
	}
	t.Logf("%d PUTs acknowledged and read back, %d answered 503 during the outage", oks.Load(), unavailable.Load())
}

// TestMinIOStalled: a MinIO that stops answering (SIGSTOP) turns into 503 within S3_TIMEOUT, never a 200 for
// work not done (here a client's timeout equals S3's), and goroutines come back down once it answers again.
func TestMinIOStalled(t *testing.T) {
	needOwnInstance(t)
	m := &minio{bin: minioBinary(t)}
	startMinIO(t, m)
	env := m.env("stalled")
	env["S3_TIMEOUT"], env["CLIENT_TIMEOUT"], env["CACHE_MAX_BYTES"] = "1s", "1s", "0"
	kv, err := start(t, env, true)
	if err != nil {
		t.Fatal(err)
	}
	p := keyPrefix(t)
	call(t, "PUT", kvURL(kv.url, p+"k"), []byte("before"))
	base := scrape(t, kv.url, "go_goroutines")
	m.cmd.Process.Signal(syscall.SIGSTOP)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			method, body := "GET", []byte(nil)
			if i%2 == 1 {
				method, body = "PUT", bytes.Repeat([]byte("x"), 64<<10)
			}
			t0 := time.Now()
			r := call(t, method, kvURL(kv.url, fmt.Sprintf("%sk%d", p, i)), body)
			wantUnavailable(t, r, time.Since(t0), 3*time.Second)
		})
	}
	wg.Wait()
	m.cmd.Process.Signal(syscall.SIGCONT)
	if g := call(t, "GET", kvURL(kv.url, p+"k"), nil); string(g.body) != "before" {
		t.Errorf("after the stall: got %d %q, want the value back", g.status, g.body)
	}
	eventually(t, 10*time.Second, "goroutines back down", func() bool {
		return scrape(t, kv.url, "go_goroutines") <= base+20
	})
}

// TestSIGTERMUnderLoad: an upload under way completes, a client that stopped reading cannot hold kv, new
// connections are refused, and the exit is 0 within SHUTDOWN_TIMEOUT.
func TestSIGTERMUnderLoad(t *testing.T) {
	needOwnInstance(t)
	kv, err := start(t, map[string]string{"SHUTDOWN_TIMEOUT": "5s", "CLIENT_TIMEOUT": "2s"}, true)
	if err != nil {
		t.Fatal(err)
	}
	p, addr := keyPrefix(t), strings.TrimPrefix(kv.url, "http://")
	call(t, "PUT", kvURL(kv.url, p+"big"), bytes.Repeat([]byte("v"), 16<<20))
	reader, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	reader.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(reader, "GET /kv/%sbig HTTP/1.1\r\nHost: kv\r\n\r\n", p) // and read nothing
	slow := make(chan error, 1)
	go func() { slow <- slowUpload(kvURL(kv.url, p+"slow"), 3*time.Second) }()
	eventually(t, 5*time.Second, "both requests under way", func() bool {
		return scrape(t, kv.url, "http_requests_in_flight") >= 3 // and the scrape itself
	})
	t0 := time.Now()
	kv.cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 3*time.Second, "new connections refused", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if err := <-slow; err != nil {
		t.Errorf("the upload under way at SIGTERM: %v", err)
	}
	select {
	case err := <-kv.done:
		if took := time.Since(t0); err != nil || took > 5*time.Second {
			t.Errorf("exit: %v after %v, want 0 within SHUTDOWN_TIMEOUT (5s)\n%s", err, took, kv.logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kv did not exit within 10s of SIGTERM")
	}
}

// TestSecondSignal: a second SIGTERM while kv waits for its requests stops it at once, with exit 1.
func TestSecondSignal(t *testing.T) {
	needOwnInstance(t)
	kv, err := start(t, map[string]string{"SHUTDOWN_TIMEOUT": "30s"}, true)
	if err != nil {
		t.Fatal(err)
	}
	go slowUpload(kvURL(kv.url, keyPrefix(t)+"slow"), 20*time.Second) // ends with kv
	eventually(t, 5*time.Second, "the upload under way", func() bool {
		return scrape(t, kv.url, "http_requests_in_flight") >= 2 // and the scrape itself
	})
	kv.cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 5*time.Second, "kv shutting down", func() bool { return strings.Contains(kv.logs.String(), "shutting down") })
	t0 := time.Now()
	kv.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-kv.done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || time.Since(t0) > 5*time.Second {
			t.Errorf("after a second SIGTERM: %v after %v, want exit 1 at once\n%s", err, time.Since(t0), kv.logs)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("kv still running 15 s after a second SIGTERM")
	}
}
