// Command kv is an HTTP key-value service that keeps every value in S3.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
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
	"syscall"
	"time"
)

func main() {
	err := run(context.Background(), os.Getenv, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kv:", err)
		os.Exit(1)
	}
}

type config struct {
	Endpoint, Bucket, AccessKey, SecretKey, Region, AuthToken                          string
	Versioning                                                                         bool
	Port, MaxValueBytes, CacheMaxBytes                                                 int64
	S3Timeout, ClientTimeout, StartupTimeout, ShutdownTimeout, SweepInterval, CacheTTL time.Duration
	LogLevel                                                                           slog.Level
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

// inRange parses whole numbers from least to most.
func inRange(least, most int64) func(string) (int64, bool) {
	return func(s string) (int64, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil && n >= least && n <= most
	}
}

func boolean(s string) (bool, bool) {
	b, err := strconv.ParseBool(s)
	return b, err == nil
}

func level(s string) (slog.Level, bool) {
	l, ok := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn,
		"error": slog.LevelError}[s]
	return l, ok
}

// endpoint accepts an S3 API's base URL: a path would prefix every object name.
func endpoint(s string) (string, bool) {
	u, err := url.Parse(s)
	return s, s == "" || err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		(u.Path == "" || u.Path == "/") && u.RawQuery == ""
}

func bearerToken(s string) (string, bool) { return s, s == "" || token(s, 4096) }

var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// loadConfig reads every setting from the environment, with its default, and names the first bad one.
func loadConfig(getenv func(string) string) (config, error) {
	const timeout, count = "a positive duration such as 10s or 1m", "a whole number of bytes"
	positive := durationFrom(time.Nanosecond)
	e := &envReader{getenv: getenv}
	c := config{Bucket: getenv("S3_BUCKET"), AccessKey: getenv("S3_ACCESS_KEY"), SecretKey: getenv("S3_SECRET_KEY"),
		Region:          cmp.Or(getenv("S3_REGION"), getenv("AWS_REGION"), "us-east-1"),
		Port:            setting(e, "PORT", "8080", "a port number from 1 to 65535", inRange(1, 65535)),
		Endpoint:        setting(e, "S3_ENDPOINT", "", "a URL with no path, such as http://minio:9000", endpoint),
		AuthToken:       setting(e, "AUTH_TOKEN", "", "printable ASCII without spaces, or unset", bearerToken),
		Versioning:      setting(e, "S3_VERSIONING", "false", "true or false", boolean),
		MaxValueBytes:   setting(e, "MAX_VALUE_BYTES", "26214400", count+" up to S3's 5 GiB", inRange(0, maxS3Value)),
		CacheMaxBytes:   setting(e, "CACHE_MAX_BYTES", "67108864", count+", e.g. 67108864", inRange(0, 1<<50)),
		S3Timeout:       setting(e, "S3_TIMEOUT", "10s", timeout, positive),
		ClientTimeout:   setting(e, "CLIENT_TIMEOUT", "10s", timeout, positive),
		StartupTimeout:  setting(e, "STARTUP_TIMEOUT", "60s", timeout, positive),
		ShutdownTimeout: setting(e, "SHUTDOWN_TIMEOUT", "10s", timeout, positive),
		SweepInterval:   setting(e, "TTL_SWEEP_INTERVAL", "1m", "a duration such as 1m, or 0 (none)", durationFrom(0)),
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

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	// The S3 SDK allocates much per call and kv's heap is small but for the cache, whose entries count what
	// they take in memory: with Go's default the collector took a third of an uncached GET's CPU. A fifth as
	// often, with the heap bounded well above what the cache may hold, unless GOGC or GOMEMLIMIT say otherwise.
	if getenv("GOGC") == "" && getenv("GOMEMLIMIT") == "" {
		debug.SetGCPercent(400)
		debug.SetMemoryLimit(2*cfg.CacheMaxBytes + 64<<20)
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := &logWriter{w: bufio.NewWriterSize(stdout, 64<<10)}
	defer out.Flush()
	log := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: cfg.LogLevel}))
	log.Info("starting", "s3", cmp.Or(cfg.Endpoint, "AWS, region "+cfg.Region), "bucket", cfg.Bucket, "versioning",
		cfg.Versioning, "cache_max_bytes", cfg.CacheMaxBytes, "auth_token", cfg.AuthToken != "")
	m := newMetrics(newCache(cfg.CacheMaxBytes, cfg.CacheTTL, cfg.S3Timeout))
	client, err := newS3Client(ctx, cfg, m, log)
	if err != nil {
		return err
	}
	st := newStore(client, log, cfg.Bucket, cfg.S3Timeout, m.cache)
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
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", cfg.Port))
	if err != nil {
		return err
	}
	srv := httpServer(newServer(log, st, m, cfg), log, cfg.ClientTimeout)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "versioned", st.versioned)
	var sweeper sync.WaitGroup
	if cfg.SweepInterval > 0 {
		sweeper.Go(func() { sweep(ctx, log, st, m, cfg.SweepInterval) })
	}
	select {
	case err = <-serveErr:
	case <-ctx.Done():
		err = shutdown(log, srv, m, cfg)
	}
	stop() // the sweeper stops with ctx
	sweeper.Wait()
	log.Info("stopped", "err", err)
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

// shutdown closes the listener and gives the requests in flight up to SHUTDOWN_TIMEOUT, or until a second
// signal. Requests still running then are cut off; kv waits for their handlers (S3_TIMEOUT bounds their S3
// calls) so that each still writes its access line.
func shutdown(log *slog.Logger, srv *http.Server, m *metrics, cfg config) error {
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	again, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(again, cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	switch {
	case again.Err() != nil:
		err = fmt.Errorf("a second signal: stopped at once with %d requests running", m.inFlight.Load())
	case errors.Is(err, context.DeadlineExceeded):
		err = fmt.Errorf("SHUTDOWN_TIMEOUT (%s) ran out: %d requests cut off", cfg.ShutdownTimeout, m.inFlight.Load())
	default:
		return err
	}
	log.Error("shutdown incomplete", "err", err)
	srv.Close()
	for end := time.Now().Add(cfg.S3Timeout); again.Err() == nil && m.inFlight.Load() > 0 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

// logWriter holds log lines in memory and writes them out within a second of the first one held, and when kv
// stops: an access line then costs no system call of its own. A crash loses at most the last second's lines.
type logWriter struct {
	mu      sync.Mutex
	w       *bufio.Writer
	pending bool // a flush is due within the second
}

func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.pending {
		l.pending = true
		time.AfterFunc(time.Second, func() { l.Flush() })
	}
	return l.w.Write(p)
}

func (l *logWriter) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = false
	return l.w.Flush()
}

// setup readies the bucket before kv listens, retrying with a capped backoff so that kv can start before its
// S3 does, for at most StartupTimeout. What retrying cannot mend stops kv at once.
func setup(ctx context.Context, log *slog.Logger, st *Store, cfg config) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := st.Setup(ctx, cfg.Versioning)
		switch {
		case err == nil && cfg.Versioning && !st.versioned:
			return errors.New("S3_VERSIONING=true, but the S3 did not turn versioning on for the bucket")
		case err == nil:
			return nil
		case errors.Is(err, ErrDenied):
			return fmt.Errorf("S3 refused kv's credentials: check S3_ACCESS_KEY and S3_SECRET_KEY: %w", err)
		case errors.Is(err, http.ErrSchemeMismatch), errors.As(err, new(*tls.CertificateVerificationError)):
			return fmt.Errorf("S3_ENDPOINT=%q: TLS failed (http:// for an S3 without TLS): %w", cfg.Endpoint, err)
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
