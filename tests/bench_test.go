package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// The benchmarks behind the README's figures: go test ./tests -run '^$' -bench . (with S3_ENDPOINT and
// friends set, they start kv themselves; with only KV_URL, the ones that need an instance of their own skip).
// Sixteen clients at once, 1 KiB values, as kvbench runs them.

var benchClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

const benchClients = 16

// benchInstance starts kv with env for one benchmark, or uses the shared one when env is nil.
func benchInstance(b *testing.B, env map[string]string) string {
	b.Helper()
	needService(b)
	if env == nil {
		return shared
	}
	needOwnInstance(b)
	kv, err := start(b, env)
	if err != nil {
		b.Fatal(err)
	}
	return kv.url
}

// load runs do from benchClients goroutines until b.N calls are done, and reports requests per second.
func load(b *testing.B, do func() error) {
	b.Helper()
	var failed, n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for range benchClients {
		wg.Go(func() {
			for i := n.Add(1); i <= int64(b.N); i = n.Add(1) {
				if err := do(); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d of %d requests failed", failed.Load(), b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// drain reads a response to its end: an error unless it is a 2xx.
func drain(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil || resp.StatusCode >= 300 {
		return fmt.Errorf("%s: %v", resp.Status, err)
	}
	return nil
}

func put(u string, body []byte) (*http.Response, error) {
	req, err := http.NewRequest("PUT", u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	return benchClient.Do(req)
}

func BenchmarkPut(b *testing.B) {
	u := kvURL(benchInstance(b, map[string]string{"LOG_LEVEL": "error"}), keyPrefix(b)+"put")
	value := bytes.Repeat([]byte("v"), 1024)
	load(b, func() error { return drain(put(u, value)) })
}

func benchGet(b *testing.B, env map[string]string) {
	u := kvURL(benchInstance(b, env), keyPrefix(b)+"get")
	if resp, err := put(u, bytes.Repeat([]byte("v"), 1024)); err != nil || resp.StatusCode != 200 {
		b.Fatalf("PUT: %v %v", resp, err)
	}
	benchClient.Get(u) // warms the cache, when there is one
	load(b, func() error { return drain(benchClient.Get(u)) })
}

func BenchmarkGetUncached(b *testing.B) {
	benchGet(b, map[string]string{"CACHE_MAX_BYTES": "0", "LOG_LEVEL": "error"})
}

func BenchmarkGetCached(b *testing.B) { benchGet(b, map[string]string{"LOG_LEVEL": "error"}) }

// BenchmarkGetCachedLogged is a cache hit with an access line per request, as compose runs kv.
func BenchmarkGetCachedLogged(b *testing.B) { benchGet(b, map[string]string{"LOG_LEVEL": "info"}) }

// BenchmarkMinIOGet is the same GET straight from MinIO through the AWS SDK: the floor under an uncached GET.
func BenchmarkMinIOGet(b *testing.B) {
	needOwnInstance(b)
	client, key := s3Client(b), keyPrefix(b)+"direct"
	ctx := context.Background()
	if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket()), Key: &key,
		Body: bytes.NewReader(bytes.Repeat([]byte("v"), 1024))}); err != nil {
		b.Fatal(err)
	}
	load(b, func() error {
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket()), Key: &key})
		if err != nil {
			return err
		}
		defer out.Body.Close()
		_, err = io.Copy(io.Discard, out.Body)
		return err
	})
}

// BenchmarkTTLBacklog writes short-lived keys (ttl=2s) as fast as 16 clients can for 20 s, with the sweep
// every second, then waits until the bucket holds none of them. It reports the write rate, the sweep's rate
// and how long after the last write the bucket was clean.
func BenchmarkTTLBacklog(b *testing.B) {
	base := benchInstance(b, map[string]string{"TTL_SWEEP_INTERVAL": "1s", "LOG_LEVEL": "warn"})
	for range b.N {
		p := keyPrefix(b)
		var written atomic.Int64
		deadline := time.Now().Add(20 * time.Second)
		var wg sync.WaitGroup
		for c := range benchClients {
			wg.Go(func() {
				for i := 0; time.Now().Before(deadline); i++ {
					resp, err := put(kvURL(base, fmt.Sprintf("%s%02d-%06d", p, c, i))+"?ttl=2s", []byte("brief"))
					if err != nil || resp.StatusCode != 200 {
						b.Errorf("PUT: %v %v", resp, err)
						return
					}
					resp.Body.Close()
					written.Add(1)
				}
			})
		}
		wg.Wait()
		stopped := time.Now()
		client := s3Client(b)
		for left(b, client, p) > 0 {
			if time.Since(stopped) > 5*time.Minute {
				b.Fatalf("%d objects still there 5 minutes after the writes", left(b, client, p))
			}
			time.Sleep(200 * time.Millisecond)
		}
		clean := time.Since(stopped)
		b.ReportMetric(float64(written.Load())/20, "ttl-writes/s")
		b.ReportMetric(clean.Seconds(), "s-clean-after-writes")
		b.ReportMetric(float64(written.Load())/(20+clean.Seconds()-2), "reclaimed/s")
	}
}

// left counts the values and index entries of keys under p still in the bucket.
func left(b *testing.B, client *s3.Client, p string) int {
	index := slices.DeleteFunc(objects(b, client, bucket(), "t/"), func(o string) bool { return !strings.Contains(o, p) })
	return len(objects(b, client, bucket(), "v/"+p)) + len(index)
}

// BenchmarkListBacklog lists a page of ten keys while 10,000 expired keys wait for a sweep (none runs), and
// BenchmarkListNoBacklog the same page with none waiting: a listing should cost what its page costs.
func BenchmarkListBacklog(b *testing.B) { benchList(b, 10000) }

func BenchmarkListNoBacklog(b *testing.B) { benchList(b, 0) }

func benchList(b *testing.B, expired int) {
	base := benchInstance(b, map[string]string{"TTL_SWEEP_INTERVAL": "1h", "LOG_LEVEL": "warn"})
	p := keyPrefix(b)
	var wg sync.WaitGroup
	next := make(chan int)
	for range benchClients {
		wg.Go(func() {
			for i := range next {
				u := kvURL(base, fmt.Sprintf("%sexpired/%05d", p, i)) + "?ttl=1s"
				if i < 0 {
					u = kvURL(base, fmt.Sprintf("%slive/%02d", p, -i))
				}
				if resp, err := put(u, []byte("v")); err == nil {
					resp.Body.Close()
				}
			}
		})
	}
	for i := -20; i < expired; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	time.Sleep(2 * time.Second) // every short-lived key has expired
	u := base + "/kv?limit=10&prefix=" + url.QueryEscape(p+"live/")
	for b.Loop() { // the setup above runs once
		resp, err := benchClient.Get(u)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("list: %v %v", resp, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
