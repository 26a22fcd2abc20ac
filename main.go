// Command kv is an HTTP key-value service that keeps every value in S3.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kv:", err)
		os.Exit(1)
	}
}

type config struct {
	Port             string
	S3Endpoint       string
	Bucket           string
	AccessKey        string
	SecretKey        string
	Region           string
	CreateBucket     bool
	Versioning       bool
	MaxValueBytes    int64
	S3Timeout        time.Duration
	StartupTimeout   time.Duration
	ShutdownTimeout  time.Duration
	TTLSweepInterval time.Duration
	CacheMaxBytes    int64
	CacheTTL         time.Duration
	AuthToken        string
	LogLevel         slog.Level
}

var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// loadConfig reads every setting from the environment, with defaults, and says what is wrong with the first
// bad one.
func loadConfig(getenv func(string) string) (config, error) {
	p := envParser{getenv: getenv}
	c := config{
		Port:             cmp.Or(getenv("PORT"), "8080"),
		S3Endpoint:       getenv("S3_ENDPOINT"),
		Bucket:           getenv("S3_BUCKET"),
		AccessKey:        getenv("S3_ACCESS_KEY"),
		SecretKey:        getenv("S3_SECRET_KEY"),
		Region:           cmp.Or(getenv("S3_REGION"), getenv("AWS_REGION"), "us-east-1"),
		CreateBucket:     p.boolean("S3_CREATE_BUCKET", true),
		Versioning:       p.boolean("S3_VERSIONING", false),
		MaxValueBytes:    p.int("MAX_VALUE_BYTES", 25<<20),
		S3Timeout:        p.duration("S3_TIMEOUT", 10*time.Second),
		StartupTimeout:   p.duration("STARTUP_TIMEOUT", 60*time.Second),
		ShutdownTimeout:  p.duration("SHUTDOWN_TIMEOUT", 10*time.Second),
		TTLSweepInterval: p.duration("TTL_SWEEP_INTERVAL", time.Minute),
		CacheMaxBytes:    p.int("CACHE_MAX_BYTES", 64<<20),
		CacheTTL:         p.duration("CACHE_TTL", 0),
		AuthToken:        getenv("AUTH_TOKEN"),
	}
	if err := c.LogLevel.UnmarshalText([]byte(cmp.Or(getenv("LOG_LEVEL"), "info"))); err != nil && p.err == nil {
		p.err = errors.New("LOG_LEVEL must be debug, info, warn or error")
	}
	if n, err := strconv.Atoi(c.Port); (err != nil || n < 1 || n > 65535) && p.err == nil {
		p.err = fmt.Errorf("PORT must be a port number, got %q", c.Port)
	}
	switch {
	case p.err != nil:
		return c, p.err
	case c.Bucket == "":
		return c, errors.New("S3_BUCKET is required")
	case !bucketName.MatchString(c.Bucket):
		return c, fmt.Errorf("S3_BUCKET %q is not a valid bucket name (3-63 lowercase letters, digits, dots, hyphens)", c.Bucket)
	case (c.AccessKey == "") != (c.SecretKey == ""):
		return c, errors.New("set both S3_ACCESS_KEY and S3_SECRET_KEY, or neither to use the default AWS credential chain")
	case c.MaxValueBytes < 0 || c.CacheMaxBytes < 0:
		return c, errors.New("MAX_VALUE_BYTES and CACHE_MAX_BYTES must not be negative")
	}
	return c, nil
}

// envParser parses typed variables, keeping the first error.
type envParser struct {
	getenv func(string) string
	err    error
}

func (p *envParser) parse(name string, parse func(string) error) {
	if s := p.getenv(name); s != "" && p.err == nil {
		if err := parse(s); err != nil {
			p.err = fmt.Errorf("%s=%q: %w", name, s, err)
		}
	}
}

func (p *envParser) duration(name string, def time.Duration) time.Duration {
	p.parse(name, func(s string) (err error) {
		if def, err = time.ParseDuration(s); err == nil && def <= 0 {
			err = errors.New("must be positive")
		}
		return err
	})
	return def
}

func (p *envParser) int(name string, def int64) int64 {
	p.parse(name, func(s string) (err error) { def, err = strconv.ParseInt(s, 10, 64); return err })
	return def
}

func (p *envParser) boolean(name string, def bool) bool {
	p.parse(name, func(s string) (err error) { def, err = strconv.ParseBool(s); return err })
	return def
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(cmp.Or(getenv("PORT"), "8080"))
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))

	c := newCache(cfg.CacheMaxBytes, cfg.CacheTTL)
	m := newMetrics(c)
	client, err := newS3Client(ctx, cfg, m.s3Middleware)
	if err != nil {
		return err
	}
	store := newStore(client, cfg.Bucket, cfg.S3Timeout, c)
	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return err
	}
	var ready atomic.Bool
	srv := &http.Server{
		Handler:           newServer(log, store, m, cfg.MaxValueBytes, cfg.AuthToken, &ready),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       5 * time.Minute, // a whole upload, however slow the client
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "bucket", cfg.Bucket, "endpoint", cfg.S3Endpoint)

	if err := waitForBucket(ctx, log, store, cfg); err != nil {
		srv.Close()
		return err
	}
	if err := store.SetupVersioning(ctx, cfg.Versioning); err != nil {
		srv.Close()
		return err
	}
	log.Info("bucket ready", "bucket", cfg.Bucket, "versioned", store.versioned)
	ready.Store(true)
	sweeperDone := make(chan struct{})
	go func() {
		defer close(sweeperDone)
		sweep(ctx, log, store, m, cfg.TTLSweepInterval)
	}()

	select {
	case err = <-serveErr:
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
		ready.Store(false)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		err = srv.Shutdown(sctx)
	}
	stop()
	<-sweeperDone
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// waitForBucket checks (and may create) the bucket, retrying with a capped backoff so the service can start
// before its S3 endpoint does, and gives up after StartupTimeout.
func waitForBucket(ctx context.Context, log *slog.Logger, store *Store, cfg config) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := store.EnsureBucket(ctx, cfg.CreateBucket)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("bucket %q does not exist and S3_CREATE_BUCKET is false", cfg.Bucket)
		}
		log.Warn("bucket not ready, retrying", "bucket", cfg.Bucket, "err", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return fmt.Errorf("bucket %q not ready after %s: %w", cfg.Bucket, cfg.StartupTimeout, err)
		case <-time.After(wait):
		}
	}
}

// sweep reclaims expired values every interval until ctx ends.
func sweep(ctx context.Context, log *slog.Logger, store *Store, m *metrics, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := store.Sweep(ctx)
			m.reclaimed.Add(int64(n))
			if err != nil && ctx.Err() == nil {
				log.Warn("ttl sweep failed", "err", err, "deleted", n)
			} else if n > 0 {
				log.Info("ttl sweep", "deleted", n)
			}
		}
	}
}

func newS3Client(ctx context.Context, cfg config, apiOptions ...func(*middleware.Stack) error) (*s3.Client, error) {
	// One pooled connection per concurrent request, kept for reuse: the default pool keeps only a few.
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 1024
	})
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(cfg.Region), awsconfig.WithHTTPClient(httpClient)}
	if cfg.AccessKey != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, "")))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.S3Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.S3Endpoint)
			o.UsePathStyle = true
		}
		// S3-compatible stores mishandle the default checksums of service/s3 v1.73+.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		// Sign an unsigned payload, so a PUT streams its body instead of hashing (and so holding) it first.
		o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
		o.APIOptions = append(o.APIOptions, apiOptions...)
	}), nil
}

// healthcheck is the container's probe: the image has no shell or curl.
func healthcheck(port string) error {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + port + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %s", resp.Status)
	}
	return nil
}
