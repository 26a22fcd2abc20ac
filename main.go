// Command kv is an HTTP key-value service that keeps every value in S3.
package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kv:", err)
		os.Exit(1)
	}
}

type config struct {
	Port, Endpoint, Bucket, AccessKey, SecretKey, Region, AuthToken string
	CreateBucket, Versioning                                        bool
	MaxValueBytes, CacheMaxBytes                                    int64
	S3Timeout, ClientTimeout, StartupTimeout, ShutdownTimeout       time.Duration
	SweepInterval, CacheTTL                                         time.Duration
	LogLevel                                                        slog.Level
}

// envReader reads settings and keeps the first mistake, said in the terms of the person who made it.
type envReader struct {
	getenv func(string) string
	err    error
}

// setting returns name's value (def when unset) as parse reads it; a value parse refuses is noted, with what
// the value must be.
func setting[T any](e *envReader, name, def, want string, parse func(string) (T, bool)) T {
	s := cmp.Or(e.getenv(name), def)
	v, ok := parse(s)
	if !ok && e.err == nil {
		e.err = fmt.Errorf("%s=%q: must be %s", name, s, want)
	}
	return v
}

// durationFrom parses durations of at least least.
func durationFrom(least time.Duration) func(string) (time.Duration, bool) {
	return func(s string) (time.Duration, bool) {
		d, err := time.ParseDuration(s)
		return d, err == nil && d >= least
	}
}

func byteCount(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0
}

func boolean(s string) (bool, bool) {
	b, err := strconv.ParseBool(s)
	return b, err == nil
}

func port(s string) (string, bool) {
	n, err := strconv.Atoi(s)
	return s, err == nil && n >= 1 && n <= 65535
}

func level(s string) (slog.Level, bool) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err == nil
}

func endpoint(s string) (string, bool) {
	u, err := url.Parse(s)
	return s, s == "" || err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// loadConfig reads every setting from the environment, with its default, and names the first bad one.
func loadConfig(getenv func(string) string) (config, error) {
	const timeout = "a positive duration such as 10s or 1m"
	positive := durationFrom(time.Nanosecond)
	e := &envReader{getenv: getenv}
	c := config{Bucket: getenv("S3_BUCKET"), AccessKey: getenv("S3_ACCESS_KEY"), SecretKey: getenv("S3_SECRET_KEY"),
		AuthToken:       getenv("AUTH_TOKEN"),
		Region:          cmp.Or(getenv("S3_REGION"), getenv("AWS_REGION"), "us-east-1"),
		Port:            setting(e, "PORT", "8080", "a port number from 1 to 65535", port),
		Endpoint:        setting(e, "S3_ENDPOINT", "", "a URL such as http://minio:9000", endpoint),
		CreateBucket:    setting(e, "S3_CREATE_BUCKET", "true", "true or false", boolean),
		Versioning:      setting(e, "S3_VERSIONING", "false", "true or false", boolean),
		MaxValueBytes:   setting(e, "MAX_VALUE_BYTES", "26214400", "a whole number of bytes, e.g. 26214400", byteCount),
		CacheMaxBytes:   setting(e, "CACHE_MAX_BYTES", "67108864", "a whole number of bytes, e.g. 67108864", byteCount),
		S3Timeout:       setting(e, "S3_TIMEOUT", "10s", timeout, positive),
		ClientTimeout:   setting(e, "CLIENT_TIMEOUT", "10s", timeout, positive),
		StartupTimeout:  setting(e, "STARTUP_TIMEOUT", "60s", timeout, positive),
		ShutdownTimeout: setting(e, "SHUTDOWN_TIMEOUT", "10s", timeout, positive),
		SweepInterval:   setting(e, "TTL_SWEEP_INTERVAL", "1m", timeout, positive),
		CacheTTL:        setting(e, "CACHE_TTL", "0", "a duration such as 30s, or 0", durationFrom(0)),
		LogLevel:        setting(e, "LOG_LEVEL", "info", "debug, info, warn or error", level),
	}
	switch {
	case e.err != nil:
		return c, e.err
	case c.Bucket == "":
		return c, errors.New("S3_BUCKET is required")
	case !bucketName.MatchString(c.Bucket):
		return c, fmt.Errorf("S3_BUCKET=%q: must be a bucket name: 3 to 63 of a-z, 0-9, dots and hyphens", c.Bucket)
	case (c.AccessKey == "") != (c.SecretKey == ""):
		return c, errors.New("set both S3_ACCESS_KEY and S3_SECRET_KEY, or neither for the AWS SDK's default chain")
	}
	return c, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(cmp.Or(getenv("PORT"), "8080"))
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	// The S3 SDK allocates much per call and kv's heap is small but for the cache: with Go's default the
	// collector took about a third of an uncached GET's CPU, a tenth of a cache hit's. A fifth as often, with
	// the heap bounded by the cache's budget instead, unless GOGC or GOMEMLIMIT say otherwise.
	if getenv("GOGC") == "" && getenv("GOMEMLIMIT") == "" {
		debug.SetGCPercent(400)
		debug.SetMemoryLimit(2*min(cfg.CacheMaxBytes, 1<<60) + 64<<20)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := &logWriter{w: bufio.NewWriterSize(stdout, 64<<10)}
	defer out.Close()
	log := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: cfg.LogLevel}))
	m := newMetrics(newCache(cfg.CacheMaxBytes, cfg.CacheTTL))
	client, err := newS3Client(ctx, cfg, m)
	if err != nil {
		return err
	}
	st := newStore(client, cfg.Bucket, cfg.S3Timeout, m.cache)
	err = setup(ctx, log, st, cfg)
	switch {
	case ctx.Err() != nil:
		return nil // a signal while kv waited for S3: stop cleanly
	case err != nil:
		return err
	}
	return serve(ctx, stop, log, st, m, cfg)
}

// serve answers requests and sweeps expired values until a signal, then shuts down.
func serve(ctx context.Context, stop func(), log *slog.Logger, st *Store, m *metrics, cfg config) error {
	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return err
	}
	var stopping atomic.Bool
	srv := httpServer(newServer(log, st, m, cfg, &stopping), log, cfg.ClientTimeout)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "bucket", cfg.Bucket, "versioned", st.versioned)
	var sweeper sync.WaitGroup
	sweeper.Go(func() { sweep(ctx, log, st, m, cfg.SweepInterval) })
	select {
	case err = <-serveErr:
	case <-ctx.Done():
		err = shutdown(log, srv, m, &stopping, cfg.ShutdownTimeout)
	}
	stop() // the sweeper stops with ctx
	sweeper.Wait()
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// httpServer bounds what a client may hold: a silent client gets clientTimeout for its headers, then for each
// read of its body and each write of the answer, which push the deadlines on (equal read timeouts spare
// net/http a deadline per request).
func httpServer(h http.Handler, log *slog.Logger, clientTimeout time.Duration) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: clientTimeout, ReadTimeout: clientTimeout,
		WriteTimeout: clientTimeout, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

// shutdown turns /readyz 503, closes the listener and gives the requests in flight up to timeout.
func shutdown(log *slog.Logger, srv *http.Server, m *metrics, stopping *atomic.Bool, timeout time.Duration) error {
	log.Info("shutting down", "timeout", timeout.String())
	stopping.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	err = fmt.Errorf("SHUTDOWN_TIMEOUT (%s) ran out with requests still running (%d); they were cut off",
		timeout, m.inFlight.Load())
	log.Error("shutdown incomplete", "err", err)
	srv.Close()
	return err
}

// logWriter holds log lines in memory and writes them out within a second of the first one held, and when kv
// stops, so that an access line costs no system call of its own; a crash loses at most the last second's lines.
type logWriter struct {
	mu      sync.Mutex
	w       *bufio.Writer
	pending *time.Timer // the flush to come, if any
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = time.AfterFunc(time.Second, func() { l.Close() })
	}
	return l.w.Write(p)
}

// Close writes out what is held (a flush still to come then finds nothing, or what came since).
func (l *logWriter) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = nil
	return l.w.Flush()
}

// setup readies the bucket before kv listens, retrying with a capped backoff so that kv can start before its
// S3 does, for at most StartupTimeout. What retrying cannot mend stops kv at once.
func setup(ctx context.Context, log *slog.Logger, st *Store, cfg config) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := st.Setup(ctx, cfg.CreateBucket, cfg.Versioning)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrNoBucket) && !cfg.CreateBucket:
			return fmt.Errorf("bucket %q does not exist and S3_CREATE_BUCKET is false", cfg.Bucket)
		case errors.Is(err, ErrDenied) && cfg.AccessKey == "":
			return fmt.Errorf("S3 refused the credentials of the AWS SDK's default chain "+
				"(S3_ACCESS_KEY and S3_SECRET_KEY are unset): %w", err)
		case errors.Is(err, ErrDenied):
			return fmt.Errorf("S3 refused kv's credentials: check S3_ACCESS_KEY and S3_SECRET_KEY: %w", err)
		}
		log.Warn("bucket not ready, retrying", "bucket", cfg.Bucket, "err", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return fmt.Errorf("bucket %q not ready after STARTUP_TIMEOUT (%s): %w", cfg.Bucket, cfg.StartupTimeout, err)
		case <-time.After(wait):
		}
	}
}

// sweep reclaims expired values every interval until ctx ends.
func sweep(ctx context.Context, log *slog.Logger, st *Store, m *metrics, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := st.Sweep(ctx)
		m.reclaimed.Add(int64(n))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("ttl sweep failed", "err", err, "deleted", n)
		case n > 0:
			log.Info("ttl sweep", "deleted", n)
		}
	}
}

func newS3Client(ctx context.Context, cfg config, m *metrics) (*s3.Client, error) {
	// One pooled connection per concurrent request, kept for reuse: the default pool keeps only a few.
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 1024
	})
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(cfg.Region), awsconfig.WithHTTPClient(hc)}
	if cfg.AccessKey != "" {
		creds := aws.Credentials{AccessKeyID: cfg.AccessKey, SecretAccessKey: cfg.SecretKey, Source: "S3_ACCESS_KEY"}
		opts = append(opts, awsconfig.WithCredentialsProvider(aws.CredentialsProviderFunc(
			func(context.Context) (aws.Credentials, error) { return creds, nil })))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint, o.UsePathStyle = aws.String(cfg.Endpoint), true
		}
		// S3-compatible stores mishandle the default checksums of service/s3 v1.73+.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		// Sign an unsigned payload, so a PUT streams its body instead of hashing (and so holding) it first,
		// and send it at once rather than wait for a "100 Continue" first (the SDK's default from 2 MiB).
		o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
		o.ContinueHeaderThresholdBytes = -1
		o.HTTPClient = s3Transport{o.HTTPClient, m}
	}), nil
}

// s3Transport is the S3 client's HTTP client: it counts each attempt by operation and S3's status code (0:
// no answer), and strips the request URL, which names the key, from transport errors, so that no key reaches
// a log.
type s3Transport struct {
	next aws.HTTPClient
	m    *metrics
}

func (t s3Transport) Do(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.Do(req)
	code := 0
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = req.URL.Scheme + "://" + req.URL.Host
	} else if err == nil {
		code = resp.StatusCode
	}
	t.m.observe(t.m.s3, series{awsmiddleware.GetOperationName(req.Context()), "", code}, time.Since(start))
	return resp, err
}

// healthcheck is the container's probe: the image has no shell or curl.
func healthcheck(port string) error {
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Get("http://127.0.0.1:" + port + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New("readyz: " + resp.Status)
	}
	return nil
}
