// Command kv is an HTTP key-value service that keeps every value in S3.
package main

import (
	"bufio"
	"bytes"
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

var bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

type config struct {
	Port, S3Endpoint, Bucket, AccessKey, SecretKey, Region, AuthToken string
	CreateBucket, Versioning                                          bool
	MaxValueBytes, CacheMaxBytes                                      int64
	S3Timeout, ClientTimeout, StartupTimeout, ShutdownTimeout         time.Duration
	TTLSweepInterval, CacheTTL                                        time.Duration
	LogLevel                                                          slog.Level
}

// loadConfig reads every setting from the environment, with its default, and says what is wrong with the
// first bad one.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{S3Endpoint: getenv("S3_ENDPOINT"), Bucket: getenv("S3_BUCKET"), AccessKey: getenv("S3_ACCESS_KEY"),
		SecretKey: getenv("S3_SECRET_KEY"), AuthToken: getenv("AUTH_TOKEN"),
		Region: cmp.Or(getenv("S3_REGION"), getenv("AWS_REGION"), "us-east-1")}
	for _, v := range []struct {
		name, def string
		into      any
	}{
		{"PORT", "8080", &c.Port}, {"S3_CREATE_BUCKET", "true", &c.CreateBucket},
		{"S3_VERSIONING", "false", &c.Versioning}, {"MAX_VALUE_BYTES", "26214400", &c.MaxValueBytes},
		{"CACHE_MAX_BYTES", "67108864", &c.CacheMaxBytes}, {"S3_TIMEOUT", "10s", &c.S3Timeout},
		{"CLIENT_TIMEOUT", "10s", &c.ClientTimeout}, {"STARTUP_TIMEOUT", "60s", &c.StartupTimeout},
		{"SHUTDOWN_TIMEOUT", "10s", &c.ShutdownTimeout}, {"TTL_SWEEP_INTERVAL", "1m", &c.TTLSweepInterval},
		{"CACHE_TTL", "0", &c.CacheTTL}, {"LOG_LEVEL", "info", &c.LogLevel},
	} {
		s := cmp.Or(getenv(v.name), v.def)
		var err error
		switch p := v.into.(type) {
		case *string: // the port
			if n, perr := strconv.Atoi(s); perr != nil || n < 1 || n > 65535 {
				err = errors.New("must be a port number")
			}
			*p = s
		case *bool:
			*p, err = strconv.ParseBool(s)
		case *int64:
			if *p, err = strconv.ParseInt(s, 10, 64); err == nil && *p < 0 {
				err = errors.New("must not be negative")
			}
		case *time.Duration: // positive, but CACHE_TTL may be 0: no bound
			if *p, err = time.ParseDuration(s); err == nil && (*p < 0 || *p == 0 && v.name != "CACHE_TTL") {
				err = errors.New("must be positive")
			}
		case *slog.Level:
			err = p.UnmarshalText([]byte(s))
		}
		if err != nil {
			return c, fmt.Errorf("%s=%q: %w", v.name, s, err)
		}
	}
	switch {
	case c.Bucket == "":
		return c, errors.New("S3_BUCKET is required")
	case !bucketName.MatchString(c.Bucket):
		return c, fmt.Errorf("S3_BUCKET=%q is not a bucket name (3-63 of a-z, 0-9, dots, hyphens)", c.Bucket)
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
	tuneGC(getenv, cfg.CacheMaxBytes)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := newLogBuffer(stdout, cfg.LogLevel, time.Second)
	defer out.close()
	log := slog.New(out)
	m := &metrics{cache: newCache(cfg.CacheMaxBytes, cfg.CacheTTL)}
	client, err := newS3Client(ctx, cfg, m)
	if err != nil {
		return err
	}
	st := newStore(client, cfg.Bucket, cfg.S3Timeout, m.cache)
	ln, err := net.Listen("tcp", ":"+cfg.Port)
	if err != nil {
		return err
	}
	var stopping atomic.Bool
	srv := httpServer(newServer(log, st, m, cfg, &stopping), log, cfg.ClientTimeout)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "bucket", cfg.Bucket)
	if err := setup(ctx, log, st, cfg); err != nil && ctx.Err() == nil { // a signal: shut down as usual
		srv.Close()
		return err
	}
	var sweeper sync.WaitGroup
	sweeper.Go(func() { sweep(ctx, log, st, m, cfg.TTLSweepInterval) })
	select {
	case err = <-serveErr:
	case <-ctx.Done():
		err = shutdown(log, srv, &stopping, cfg.ShutdownTimeout)
	}
	stop()
	if sweeper.Wait(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// tuneGC has the collector run a fifth as often as Go's default, which collects kv's small heap every few MiB
// allocated (a tenth of a cache hit's instructions), and bounds the heap by twice the cache's budget plus
// 64 MiB instead. GOGC or GOMEMLIMIT in the environment keep Go's own handling.
func tuneGC(getenv func(string) string, cacheMaxBytes int64) {
	if getenv("GOGC") == "" && getenv("GOMEMLIMIT") == "" {
		debug.SetGCPercent(400)
		debug.SetMemoryLimit(2*min(cacheMaxBytes, 1<<60) + 64<<20)
	}
}

// shutdown turns /readyz 503, closes the listener and gives the requests in flight up to timeout.
func shutdown(log *slog.Logger, srv *http.Server, stopping *atomic.Bool, timeout time.Duration) error {
	log.Info("shutting down", "timeout", timeout.String())
	stopping.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return srv.Shutdown(ctx)
}

// logBuffer is kv's slog.Handler. It keeps log lines in memory and writes them out at least every second and
// when kv stops, so that an access line costs no system call of its own; a crash loses what the last second
// logged. The access line it formats itself, in the bytes the embedded slog.JSONHandler writes for it
// (TestLogBuffer compares them), in a quarter of the time; any other record it hands on.
type logBuffer struct {
	slog.Handler // a JSONHandler writing into the buffer
	mu           sync.Mutex
	w            *bufio.Writer
	done         chan struct{}
	// The access line's time to the second, and its zone, as formatted for the second sec in loc.
	sec        int64
	loc        *time.Location
	date, zone []byte
}

func newLogBuffer(w io.Writer, level slog.Leveler, every time.Duration) *logBuffer {
	l := &logBuffer{w: bufio.NewWriterSize(w, 64<<10), done: make(chan struct{})}
	l.Handler = slog.NewJSONHandler(l, &slog.HandlerOptions{Level: level})
	go l.flushEvery(every)
	return l
}

func (l *logBuffer) Handle(ctx context.Context, r slog.Record) error {
	a := accessLine(r)
	if a == nil {
		return l.Handler.Handle(ctx, r)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := append(l.appendTime(append(l.w.AvailableBuffer(), `{"time":"`...), r.Time), `","level":"`...)
	b = append(append(append(append(b, r.Level.String()...), `","msg":"`...), r.Message...), `","request_id":"`...)
	b = append(append(append(append(b, a.id...), `","method":"`...), a.method...), `","route":"`...)
	b = append(strconv.AppendInt(append(append(b, a.route...), `","status":`...), int64(a.status), 10), `,"bytes":`...)
	b = append(strconv.AppendInt(b, a.bytes, 10), `,"duration_ms":`...)
	_, err := l.w.Write(append(strconv.AppendFloat(b, a.ms(), 'f', -1, 64), "}\n"...))
	return err
}

// accessLine returns the recorder of r if r is an access line that Handle writes as slog.JSONHandler would:
// its one attribute the recorder, under no key, its strings ones JSON takes as they are, its year 0 to 9999.
// (duration_ms is 0 or at least 0.001, a float JSON writes without an exponent.)
func accessLine(r slog.Record) *recorder {
	var a *recorder
	r.Attrs(func(at slog.Attr) bool {
		if at.Key == "" {
			a, _ = at.Value.Any().(*recorder)
		}
		return false
	})
	if y := r.Time.Year(); a == nil || r.NumAttrs() != 1 || r.Time.IsZero() || y < 0 || y > 9999 ||
		!plain(r.Message, a.id, a.method, a.route) {
		return nil
	}
	return a
}

// appendTime appends t as t.AppendFormat(b, time.RFC3339Nano) does, formatting its date and zone once a
// second rather than for every line.
func (l *logBuffer) appendTime(b []byte, t time.Time) []byte {
	if sec := t.Unix(); sec != l.sec || t.Location() != l.loc {
		l.sec, l.loc = sec, t.Location()
		l.date, l.zone = t.AppendFormat(l.date[:0], "2006-01-02T15:04:05"), t.AppendFormat(l.zone[:0], "Z07:00")
	}
	b = append(b, l.date...)
	if ns := t.Nanosecond(); ns > 0 {
		n := len(b)
		b = strconv.AppendInt(b, int64(ns)+1e9, 10) // nine digits behind a 1, which the point replaces
		b[n] = '.'
		b = bytes.TrimRight(b, "0")
	}
	return append(b, l.zone...)
}

// plain reports whether JSON takes each string as it is: printable ASCII without quotes or backslashes.
func plain(ss ...string) bool {
	for _, s := range ss {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < ' ' || c > '~' || c == '"' || c == '\\' {
				return false
			}
		}
	}
	return true
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *logBuffer) flushEvery(d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			l.mu.Lock()
			l.w.Flush()
			l.mu.Unlock()
		}
	}
}

func (l *logBuffer) close() {
	close(l.done)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Flush()
}

// httpServer bounds what a client may hold: a silent client gets clientTimeout for its headers and then for
// each read of its body (which pushes the deadline on); equal timeouts spare net/http a deadline per request.
func httpServer(h http.Handler, log *slog.Logger, clientTimeout time.Duration) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: clientTimeout, ReadTimeout: clientTimeout,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
}

// setup readies the store while the server already answers (/kv with 503), retrying with a capped backoff
// so that kv can start before its S3 does, for at most StartupTimeout.
func setup(ctx context.Context, log *slog.Logger, st *Store, cfg config) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.StartupTimeout)
	defer cancel()
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		err := st.Setup(ctx, cfg.CreateBucket, cfg.Versioning)
		switch {
		case err == nil:
			log.Info("bucket ready", "bucket", cfg.Bucket, "versioned", st.versioned)
			return nil
		case errors.Is(err, ErrNoBucket) && !cfg.CreateBucket:
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
func sweep(ctx context.Context, log *slog.Logger, st *Store, m *metrics, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := st.Sweep(ctx)
			m.reclaimed.Add(int64(n))
			if err != nil && ctx.Err() == nil {
				log.Warn("ttl sweep failed", "err", err, "deleted", n)
			} else if n > 0 {
				log.Info("ttl sweep", "deleted", n)
			}
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
		if cfg.S3Endpoint != "" {
			o.BaseEndpoint, o.UsePathStyle = aws.String(cfg.S3Endpoint), true
		}
		// S3-compatible stores mishandle the default checksums of service/s3 v1.73+.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		// Sign an unsigned payload, so a PUT streams its body instead of hashing (and so holding) it first.
		o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
		o.HTTPClient = s3Transport{o.HTTPClient, m}
	}), nil
}

// s3Transport is the S3 client's HTTP client: it counts each attempt by operation and outcome, and strips
// the request URL, which names the key, from transport errors, so that no key reaches a log.
type s3Transport struct {
	next aws.HTTPClient
	m    *metrics
}

func (t s3Transport) Do(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.Do(req)
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = req.URL.Scheme + "://" + req.URL.Host
	}
	outcome := "error"
	switch {
	case err != nil:
	case resp.StatusCode < 300:
		outcome = "ok"
	case resp.StatusCode == 404:
		outcome = "not_found"
	case resp.StatusCode == 412:
		outcome = "precondition_failed"
	}
	observe(&t.m.s3, seriesKey{awsmiddleware.GetOperationName(req.Context()), outcome, 0}, time.Since(start))
	return resp, err
}

// healthcheck is the container's probe: the image has no shell or curl.
func healthcheck(port string) error {
	resp, err := (&http.Client{Timeout: 3 * time.Second}).Get("http://127.0.0.1:" + port + "/readyz")
	if err == nil && resp.StatusCode != http.StatusOK {
		err = errors.New("readyz: " + resp.Status)
	}
	if resp != nil {
		resp.Body.Close()
	}
	return err
}
