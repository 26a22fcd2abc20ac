package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// BenchmarkKV measures kv beside the MinIO it stores in: a GET and a PUT of 1 KiB through kv (the GET with the
// cache and without) and the same straight to MinIO with the same SDK, 16 clients at once. The README's
// figures come from it:
//
//	go test -run '^$' -bench . -benchtime 5s ./tests/
//
// with S3_ENDPOINT, S3_BUCKET, S3_ACCESS_KEY and S3_SECRET_KEY naming a MinIO (see README, Tests).
func BenchmarkKV(b *testing.B) {
	needOwnInstance(b)
	quiet := map[string]string{"LOG_LEVEL": "error"}
	cached, err := start(b, quiet, true)
	if err != nil {
		b.Fatal(err)
	}
	quiet["CACHE_MAX_BYTES"] = "0"
	uncached, err := start(b, quiet, true)
	if err != nil {
		b.Fatal(err)
	}
	key, value := keyPrefix(b)+"value", bytes.Repeat([]byte("v"), 1<<10)
	call(b, "PUT", kvURL(cached.url, key), value)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	kvDo := func(method, base string) func() error {
		return func() error {
			req, _ := http.NewRequest(method, kvURL(base, key), bytes.NewReader(value))
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s: %s", method, resp.Status)
			}
			return nil
		}
	}
	s3c, bucket, name := s3Client(b), os.Getenv("S3_BUCKET"), "v/"+key+"!" // kv's object for a key without "!"
	ctx := context.Background()
	for _, bench := range []struct {
		name string
		do   func() error
	}{
		{"get/kv-cached", kvDo("GET", cached.url)},
		{"get/kv-uncached", kvDo("GET", uncached.url)},
		{"get/minio", func() error {
			out, err := s3c.GetObject(ctx, &s3.GetObjectInput{Bucket: &bucket, Key: &name})
			if err == nil {
				_, err = io.Copy(io.Discard, out.Body)
				out.Body.Close()
			}
			return err
		}},
		{"put/kv", kvDo("PUT", uncached.url)},
		{"put/minio", func() error {
			_, err := s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &name,
				Body: bytes.NewReader(value), ContentLength: aws.Int64(int64(len(value)))})
			return err
		}},
	} {
		b.Run(bench.name, func(b *testing.B) {
			b.SetParallelism(8) // 16 clients on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := bench.do(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
