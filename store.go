package main

import (
	"bytes"
	"cmp"
	"container/list"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Object layout: a key's value is valuePrefix + objectPath(key); each TTL write adds the index entry
// indexPrefix + <expiry second> + "/" + objectPath(key) (a late one "!" for "/": see Put). No key can name an
// object outside its prefix.
const (
	valuePrefix  = "v/"
	indexPrefix  = "t/"
	indexWidth   = 11   // zero-padded Unix seconds, so index entries list in expiry order
	maxObjectKey = 1024 // S3's limit on an object name; keys up to maxObjectKey-15 bytes always fit
	expiresMeta  = "expires-at"
	sweepPage    = 1000             // index entries per LIST while sweeping
	inFlight     = 32               // S3 calls at once while sweeping or listing
	settled      = 30 * time.Second // a value written longer ago than this has its index entry, if it has a TTL
	cacheMaxItem = 1 << 20
	maxS3Value   = 5 << 30 // the largest object one PutObject stores
)

var (
	ErrNotFound     = errors.New("not found")
	ErrNoVersion    = fmt.Errorf("no such version: %w", ErrNotFound)
	ErrPrecondition = errors.New("precondition failed")
	ErrBadKey       = errors.New("key rejected by storage")
	ErrBadVersion   = errors.New("malformed version id")
	ErrNoBucket     = errors.New("bucket does not exist")
	ErrDenied       = errors.New("access denied")
)

// objectPath names a key's object: every "!" doubled, then one "!" at the end. MinIO keeps objects as
// folders on disk and cannot list both "a" and "a/b"; here an object's name ends in an odd run of "!" and a
// folder's never does. "!" sorts before every printable character but space, so names keep the keys' order.
func objectPath(key string) string { return strings.ReplaceAll(key, "!", "!!") + "!" }

func valueName(key string) string { return valuePrefix + objectPath(key) }

// keyOf inverts objectPath; ok is false for a name kv did not make.
func keyOf(path string) (key string, ok bool) {
	key = strings.ReplaceAll(strings.TrimSuffix(path, "!"), "!!", "!")
	return key, objectPath(key) == path
}

// dueSecond rounds an expiry up to the second, so an index entry is due only once its value has expired.
func dueSecond(at time.Time) int64 { return at.Add(time.Second - 1).Unix() }

func indexKey(key string, at time.Time, late bool) string {
	separator := map[bool]string{false: "/", true: "!"}[late]
	return fmt.Sprintf("%s%0*d%s%s", indexPrefix, indexWidth, dueSecond(at), separator, objectPath(key))
}

// s3API is the part of *s3.Client the store calls, so unit tests can hand it a fake.
type s3API interface {
	PutObject(context.Context, *s3.PutObjectInput, ...s3Opt) (*s3.PutObjectOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...s3Opt) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...s3Opt) (*s3.HeadObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...s3Opt) (*s3.DeleteObjectOutput, error)
	DeleteObjects(context.Context, *s3.DeleteObjectsInput, ...s3Opt) (*s3.DeleteObjectsOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...s3Opt) (*s3.ListObjectsV2Output, error)
	ListObjectVersions(context.Context, *s3.ListObjectVersionsInput, ...s3Opt) (*s3.ListObjectVersionsOutput, error)
	HeadBucket(context.Context, *s3.HeadBucketInput, ...s3Opt) (*s3.HeadBucketOutput, error)
	CreateBucket(context.Context, *s3.CreateBucketInput, ...s3Opt) (*s3.CreateBucketOutput, error)
	PutBucketVersioning(context.Context, *s3.PutBucketVersioningInput, ...s3Opt) (*s3.PutBucketVersioningOutput, error)
	GetBucketVersioning(context.Context, *s3.GetBucketVersioningInput, ...s3Opt) (*s3.GetBucketVersioningOutput, error)
}

type s3Opt = func(*s3.Options)

// newS3Client makes the SDK's client for cfg. Without S3_ACCESS_KEY it asks the SDK's default chain for
// credentials at once, so that a machine without any stops kv now rather than at every S3 call.
func newS3Client(ctx context.Context, cfg config, m *metrics, log *slog.Logger) (*s3.Client, error) {
	// One pooled connection per concurrent request, kept for reuse: the default pool keeps only a few.
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 1024
		dial := t.DialContext
		t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			return idleConn{c, cfg.S3Timeout}, err
		}
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
	if cfg.AccessKey == "" {
		ctx, cancel := context.WithTimeout(ctx, cfg.S3Timeout)
		defer cancel()
		_, err = awsCfg.Credentials.Retrieve(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("S3_ACCESS_KEY is unset and the AWS SDK's default chain has no credentials: %w", err)
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
		o.HTTPClient = s3Transport{o.HTTPClient, m, log}
	}), nil
}

// s3Transport is the S3 client's HTTP client: it counts each attempt by operation and S3's status code (0:
// no answer), logs it at debug, strips the request URL, which names the key, from transport errors, so that
// no key reaches a log, and copies an answer into the buffer its context carries (see s3Order).
type s3Transport struct {
	next aws.HTTPClient
	m    *metrics
	log  *slog.Logger
}

// rawAnswer is the context key of a buffer for an S3 answer's body.
type rawAnswer struct{}

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
	op, took := awsmiddleware.GetOperationName(req.Context()), time.Since(start)
	t.m.observe(t.m.s3, series{operation: op, code: code}, took)
	t.log.Debug("s3 call", "operation", op, "code", code, "duration_us", took.Microseconds(), "err", err)
	if raw, ok := req.Context().Value(rawAnswer{}).(*bytes.Buffer); ok && err == nil {
		raw.Reset() // a retry's answer replaces the one before
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.TeeReader(resp.Body, raw), resp.Body}
	}
	return resp, err
}

// Meta describes one stored value.
type Meta struct {
	Size         int64     `json:"size"`
	ETag         string    `json:"etag"` // quoted, as S3 returns it
	ContentType  string    `json:"-"`
	LastModified time.Time `json:"-"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"` // zero: never
	Version      string    `json:"version,omitempty"`
}

// Condition judges a write's preconditions against the live value (exists false: there is none).
type Condition func(cur Meta, exists bool) bool

// PutOptions are a write's content type, preconditions (nil: none) and expiry (zero: never).
type PutOptions struct {
	ContentType string
	Condition   Condition
	TTL         time.Duration
}

// Store keeps values in one S3 bucket. Each S3 call is bounded by timeout; a value's stream is bounded by
// timeout without progress rather than in total, so a large value takes as long as it needs.
type Store struct {
	s3        s3API
	log       *slog.Logger
	bucket    string
	timeout   time.Duration
	now       func() time.Time
	cache     *cache // nil: off
	versioned bool   // set by Setup, before kv serves
}

func newStore(client s3API, log *slog.Logger, bucket string, timeout time.Duration, c *cache) *Store {
	return &Store{s3: client, log: log, bucket: bucket, timeout: timeout, now: time.Now, cache: c}
}

func (s *Store) expired(m Meta) bool { return !m.ExpiresAt.IsZero() && !s.now().Before(m.ExpiresAt) }

// Setup checks the bucket (creating a missing one), enables versioning when asked, and notes whether the
// bucket keeps versions.
func (s *Store) Setup(ctx context.Context, versioning bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.Ready(ctx)
	if errors.Is(err, ErrNoBucket) {
		_, err = s.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.bucket})
		err = fail("create bucket", err) // BucketAlreadyOwnedByYou (another replica was first): the retry finds it
	}
	if err == nil && versioning {
		_, err = s.s3.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: &s.bucket,
			VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled}})
		err = fail("enable versioning", err)
	}
	if err != nil {
		return err
	}
	out, err := s.s3.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: &s.bucket})
	s.versioned = err == nil && out.Status == types.BucketVersioningStatusEnabled
	return fail("get versioning", err)
}

// Ready reports whether the bucket answers; ErrNoBucket when it does not exist.
func (s *Store) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	if code := errorCode(err); code == "NotFound" || code == "NoSuchBucket" {
		return wrap("head bucket", ErrNoBucket, err)
	}
	return fail("head bucket", err)
}

// Put stores body (size bytes) under key. Preconditions are judged against the live value (an expired one
// counts as absent) and enforced by S3's conditional PutObject, so a concurrent writer cannot slip in between.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, size int64, o PutOptions) (m Meta, err error) {
	s.cache.writing(key, 1, nil)
	defer func() { s.cache.writing(key, -1, err) }()
	in := &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)), ContentLength: &size,
		ContentType: &o.ContentType, Body: body}
	in.IfMatch, in.IfNoneMatch, err = s.precondition(ctx, key, o.Condition)
	m = Meta{Size: size, ContentType: o.ContentType}
	if err == nil && o.TTL > 0 {
		// The index entry goes first: a crash in between leaves a stale entry, never a value nothing reclaims.
		m.ExpiresAt = s.now().Add(o.TTL).UTC()
		in.Metadata = map[string]string{expiresMeta: m.ExpiresAt.Format(time.RFC3339Nano)}
		err = s.putIndex(ctx, indexKey(key, m.ExpiresAt, false))
	}
	if err != nil {
		return Meta{}, err
	}
	// No bound in all (a large value takes as long as it needs; idleConn bounds each write to S3), and one
	// attempt: the SDK cannot rewind a stream to try again, and would report that instead of the cause.
	out, err := s.s3.PutObject(ctx, in, func(o *s3.Options) { o.RetryMaxAttempts = 1 })
	if err != nil {
		return Meta{}, goneSinceHead(fail("put", err), in.IfMatch)
	}
	m.ETag, m.Version = aws.ToString(out.ETag), aws.ToString(out.VersionId)
	// A sweep may have dropped the entry while this slow upload ran (two seconds allow for replicas' clocks). A
	// late entry, of the same second, has a name no running sweep listed.
	if o.TTL > 0 && !s.now().Before(time.Unix(dueSecond(m.ExpiresAt)-2, 0)) {
		s.indexLate(ctx, key, m.ExpiresAt)
	}
	return m, nil
}

func (s *Store) putIndex(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &name, Body: strings.NewReader("")})
	return fail("put index", err)
}

// indexLate puts a value's second index entry (see Put, Delete). The write took effect whatever happens here:
// a failure is logged, and the sweep may then leave the value in the bucket once it has expired.
func (s *Store) indexLate(ctx context.Context, key string, expiresAt time.Time) {
	err := s.putIndex(ctx, indexKey(key, expiresAt, true))
	if err != nil {
		s.log.Warn("written, but not its late ttl index entry: the sweep may leave the value in the bucket", "err", err)
	}
}

// precondition judges cond against the live value (an expired one is absent, and is reclaimed first), and
// returns what holds S3 to exactly what kv saw: the ETag the object must still have, or none at all.
func (s *Store) precondition(ctx context.Context, key string, cond Condition) (match, none *string, err error) {
	if cond == nil {
		return nil, nil, nil
	}
	cur, err := s.stat(ctx, key, "")
	switch {
	case err != nil && !errors.Is(err, ErrNotFound):
		return nil, nil, err
	case !cond(cur, err == nil):
		return nil, nil, ErrPrecondition
	case err == nil:
		return &cur.ETag, nil, nil
	case cur.ETag != "":
		_, err := s.reclaim(ctx, key, cur)
		return nil, aws.String("*"), err
	}
	return nil, aws.String("*"), nil
}

// goneSinceHead turns S3's "no such key" for a write conditional on an ETag into a failed precondition: the
// value went between kv's HEAD and the write.
func goneSinceHead(err error, etag *string) error {
	if etag != nil && errors.Is(err, ErrNotFound) {
		return ErrPrecondition
	}
	return err
}

// Get returns the value's body, which the caller must close; an expired value is ErrNotFound. With the cache
// on, small values come from memory.
func (s *Store) Get(ctx context.Context, key, version string) (io.ReadCloser, Meta, error) {
	if s.cache == nil || version != "" {
		return s.getObject(ctx, key, version)
	}
	e, gen := s.cache.get(key, s.now())
	if e != nil {
		return io.NopCloser(bytes.NewReader(e.value)), e.meta, nil
	}
	body, m, err := s.getObject(ctx, key, "")
	if err != nil || !s.cache.fits(m.Size) {
		return body, m, err
	}
	value := slices.Grow([]byte(nil), int(m.Size))[:m.Size] // its capacity is what the allocator gave
	_, err = io.ReadFull(body, value)
	body.Close()
	if err != nil {
		return nil, Meta{}, wrap("get", nil, err)
	}
	s.cache.fill(&cacheEntry{key: key, value: value, meta: m, stored: s.now()}, gen)
	return io.NopCloser(bytes.NewReader(value)), m, nil
}

// getObject bounds the wait for S3's answer by timeout, retries included, and not the body, which takes as
// long as the client needs (idleConn bounds each read from S3).
func (s *Store) getObject(ctx context.Context, key, version string) (io.ReadCloser, Meta, error) {
	ctx, cancel := context.WithCancel(ctx)
	answered := time.AfterFunc(s.timeout, cancel)
	out, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)),
		VersionId: nonEmpty(version)})
	answered.Stop()
	if err != nil {
		return nil, Meta{}, failObject("get", version, err)
	}
	m := meta(out.ContentLength, out.ETag, out.ContentType, out.LastModified, out.Metadata, out.VersionId)
	if s.expired(m) {
		out.Body.Close()
		return nil, m, ErrNotFound
	}
	return out.Body, m, nil
}

// Head returns the value's metadata for a client's HEAD. S3 answers a HEAD in a missing bucket as if the key
// were missing (a 404 without a body), so an absence is checked with the bucket.
func (s *Store) Head(ctx context.Context, key, version string) (Meta, error) {
	m, err := s.stat(ctx, key, version)
	if !errors.Is(err, ErrNotFound) || m.ETag != "" {
		return m, err
	}
	berr := s.Ready(ctx)
	return m, cmp.Or(berr, err)
}

// stat returns the value's metadata; an expired value is ErrNotFound, with its metadata.
func (s *Store) stat(ctx context.Context, key, version string) (Meta, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)),
		VersionId: nonEmpty(version)})
	if err != nil {
		return Meta{}, failObject("head", version, err)
	}
	m := meta(out.ContentLength, out.ETag, out.ContentType, out.LastModified, out.Metadata, out.VersionId)
	if s.expired(m) {
		return m, ErrNotFound
	}
	return m, nil
}

// Delete removes key, or with a version that one version (or delete marker) for good. It is idempotent: S3
// deletes whether or not there was anything, so whether this call removed a value is unknowable. With cond it
// deletes only if cond holds, else ErrPrecondition; S3 is asked to hold to the ETag kv saw too (MinIO
// ignores it: a write landing between kv's HEAD and its delete can be deleted).
func (s *Store) Delete(ctx context.Context, key, version string, cond Condition) (err error) {
	s.cache.writing(key, 1, nil)
	defer func() { s.cache.writing(key, -1, err) }()
	etag, _, err := s.precondition(ctx, key, cond)
	if err != nil {
		return err
	}
	_, err = s.deleteObject(ctx, valueName(key), version, aws.ToString(etag))
	if err != nil || version == "" {
		return goneSinceHead(err, etag)
	}
	m, err := s.stat(ctx, key, "") // the version now current may have lost its entry while it lay buried
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Warn("deleted, but not looked at what is now current: the sweep may leave it in the bucket", "err", err)
	}
	if !m.ExpiresAt.IsZero() {
		s.indexLate(ctx, key, m.ExpiresAt)
	}
	return nil
}

func (s *Store) deleteObject(ctx context.Context, name, version, etag string) (*s3.DeleteObjectOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &name,
		VersionId: nonEmpty(version), IfMatch: nonEmpty(etag)})
	return out, failObject("delete", version, err)
}

// List returns the live keys among the next limit objects under prefix, in the order of their names, after
// the cursor after (an object path: a walk moves past objects kv did not write). A page is short when it
// passed expired values or other objects; next is the cursor of the following page, empty on the last. Only
// a key that may have expired costs a HEAD: one with an index entry due, or a value too recent to be sure of.
func (s *Store) List(ctx context.Context, prefix, after string, limit int) (keys []string, next string, err error) {
	lctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.s3.ListObjectsV2(lctx, &s3.ListObjectsV2Input{Bucket: &s.bucket, MaxKeys: aws.Int32(int32(limit + 1)),
		Prefix:     aws.String(valuePrefix + strings.ReplaceAll(prefix, "!", "!!")),
		StartAfter: aws.String(valuePrefix + after)})
	if err != nil {
		return nil, "", fail("list", err)
	}
	page := out.Contents[:min(limit, len(out.Contents))]
	// One object more than the page proves that more follow: MinIO can answer IsTruncated=false with
	// objects still to come (seen with start-after and a small max-keys).
	if len(out.Contents) > limit || aws.ToBool(out.IsTruncated) && len(page) > 0 {
		next = strings.TrimPrefix(aws.ToString(page[len(page)-1].Key), valuePrefix)
	}
	entries, _, more, err := s.indexPage(ctx, types.ObjectIdentifier{})
	if err != nil {
		return nil, "", err
	}
	due, dueMore := dueEntries(entries, more, s.now().Add(2*time.Second)) // and those due soon
	var mayExpire []bool
	for _, o := range page {
		key, ok := keyOf(strings.TrimPrefix(aws.ToString(o.Key), valuePrefix))
		if ok && strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
			recent := aws.ToTime(o.LastModified).After(s.now().Add(-settled))
			mayExpire = append(mayExpire, dueMore || due[key] != nil || recent) // dueMore: the index says too little
		}
	}
	errs := make([]error, len(keys))
	parallel(len(keys), func(i int) {
		if mayExpire[i] {
			_, errs[i] = s.stat(ctx, keys[i], "")
		}
	})
	live := keys[:0]
	for i, err := range errs {
		switch {
		case err == nil:
			live = append(live, keys[i])
		case !errors.Is(err, ErrNotFound):
			return nil, "", err
		}
	}
	return live, next, nil
}

// parallel calls f(0) to f(n-1), inFlight at a time, and returns once all have returned.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, inFlight)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// indexPage lists a page of the index after the marker: every version and delete marker of its entries, so
// that deleting them by id leaves nothing behind on a versioned bucket. next is the following page's marker.
func (s *Store) indexPage(ctx context.Context, after types.ObjectIdentifier) (page []types.ObjectIdentifier,
	next types.ObjectIdentifier, more bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.s3.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: &s.bucket, KeyMarker: after.Key,
		Prefix: aws.String(indexPrefix), VersionIdMarker: after.VersionId, MaxKeys: aws.Int32(sweepPage)})
	if err != nil {
		return nil, next, false, fail("list index", err)
	}
	for _, v := range out.Versions {
		page = append(page, types.ObjectIdentifier{Key: v.Key, VersionId: v.VersionId})
	}
	for _, d := range out.DeleteMarkers {
		page = append(page, types.ObjectIdentifier{Key: d.Key, VersionId: d.VersionId})
	}
	slices.SortStableFunc(page, func(a, b types.ObjectIdentifier) int { return strings.Compare(*a.Key, *b.Key) })
	next = types.ObjectIdentifier{Key: out.NextKeyMarker, VersionId: out.NextVersionIdMarker}
	return page, next, aws.ToBool(out.IsTruncated) && len(page) > 0, nil
}

// Sweep reclaims expired values. It reads the index a page at a time, up to the first entry not due, sweeps
// each key with due entries, inFlight keys at a time, and deletes the page's spent entries in one call, so
// its work and memory grow with a page, never with the bucket or the backlog. It returns how many values it
// deleted, and the first error with how many keys (or calls) failed.
func (s *Store) Sweep(ctx context.Context) (deleted int, err error) {
	failed, after := 0, types.ObjectIdentifier{}
	for more := true; more && failed == 0 && ctx.Err() == nil; {
		page, next, pageMore, lerr := s.indexPage(ctx, after)
		entries, dueMore := dueEntries(page, pageMore, s.now())
		keys := slices.Sorted(maps.Keys(entries))
		spent, gone := make([][]types.ObjectIdentifier, len(keys)), make([]bool, len(keys))
		errs := make([]error, len(keys))
		parallel(len(keys), func(i int) { spent[i], gone[i], errs[i] = s.sweepKey(ctx, keys[i], entries[keys[i]]) })
		for i := range keys {
			if gone[i] {
				deleted++
			}
		}
		for _, e := range append(errs, lerr, s.deleteEntries(ctx, slices.Concat(spent...))) {
			if e != nil {
				failed++
				err = cmp.Or(err, e)
			}
		}
		more, after = dueMore, next
	}
	if err != nil {
		err = fmt.Errorf("%d failed, the first: %w", failed, err)
	}
	return deleted, err
}

// dueEntries groups the due entries of a page of the index by key, and tells whether due entries may follow.
// An entry names the end of the second its value expires in: once that has begun, the value has expired.
func dueEntries(page []types.ObjectIdentifier, more bool, now time.Time) (
	entries map[string][]types.ObjectIdentifier, dueMore bool) {
	entries = map[string][]types.ObjectIdentifier{}
	for _, e := range page {
		name := strings.TrimPrefix(aws.ToString(e.Key), indexPrefix)
		n, err := strconv.ParseInt(name[:min(indexWidth, len(name))], 10, 64)
		key, ok := keyOf(name[min(indexWidth+1, len(name)):])
		switch {
		case n > now.Unix() && err == nil:
			return entries, false
		case err == nil && ok:
			entries[key] = append(entries[key], e)
		}
	}
	return entries, more
}

// sweepKey HEADs a key with due entries and deletes its value if it has expired. It returns the entries done
// with (none when it failed): all but the entry of a live TTL value. A value still uploading when its entry
// came due puts an entry of its own once it lands (see Put), so the absent key's entries go too.
func (s *Store) sweepKey(ctx context.Context, key string, entries []types.ObjectIdentifier) (
	spent []types.ObjectIdentifier, deleted bool, err error) {
	m, err := s.stat(ctx, key, "")
	switch {
	case errors.Is(err, ErrNotFound) && m.ETag != "":
		deleted, err = s.reclaim(ctx, key, m)
	case errors.Is(err, ErrNotFound):
		err = nil
	case err == nil && !m.ExpiresAt.IsZero():
		entries = slices.DeleteFunc(entries, func(e types.ObjectIdentifier) bool {
			return *e.Key == indexKey(key, m.ExpiresAt, false) || *e.Key == indexKey(key, m.ExpiresAt, true)
		})
	}
	if err != nil {
		return nil, false, err
	}
	return entries, deleted, nil
}

// deleteEntries deletes index entries in one call (a page holds no more than the 1,000 it takes).
func (s *Store) deleteEntries(ctx context.Context, ids []types.ObjectIdentifier) error {
	if len(ids) == 0 {
		return nil
	}
	for i := range ids {
		if !s.versioned {
			ids[i].VersionId = nil // on an unversioned bucket the name is the object
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.s3.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &s.bucket,
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
	if err == nil && len(out.Errors) > 0 {
		err = fmt.Errorf("%d entries not deleted, the first for %s", len(out.Errors), aws.ToString(out.Errors[0].Code))
	}
	return fail("delete index entries", err)
}

// reclaim deletes key's expired value m on the ETag it had: S3 then spares a value written since with other
// bytes (MinIO ignores the condition). On a versioned bucket the delete lays a marker, so the expired version
// stays in the history, as a DELETE leaves it; should the marker have buried a newer version (a write of the
// same bytes, so the same ETag, landed since the HEAD), the marker goes again, which brings that version
// back. deleted is false when the value was spared.
func (s *Store) reclaim(ctx context.Context, key string, m Meta) (deleted bool, err error) {
	s.cache.writing(key, 1, nil) // MinIO may delete a racing rewrite: the cache must not keep it
	defer func() { s.cache.writing(key, -1, err) }()
	out, err := s.deleteObject(ctx, valueName(key), "", m.ETag)
	switch {
	case errors.Is(err, ErrPrecondition) || errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil || !aws.ToBool(out.DeleteMarker):
		return err == nil, err
	}
	marker := aws.ToString(out.VersionId)
	below, _, err := s.Versions(ctx, key, marker, 1)
	if err != nil || len(below) == 0 || below[0].Version == m.Version || below[0].Deleted {
		return err == nil, err
	}
	_, err = s.deleteObject(ctx, valueName(key), marker, "")
	return false, err
}

// Version is one entry of a key's history.
type Version struct {
	Version      string    `json:"version"`
	Size         int64     `json:"size"`
	ETag         string    `json:"etag,omitempty"`
	LastModified time.Time `json:"last_modified"`
	Latest       bool      `json:"latest"`
	Deleted      bool      `json:"deleted"` // a delete marker
}

// Versions lists key's history in S3's order (newest first), limit entries after the version id after, a
// page of S3's own; next is the last version returned when more of the key's may follow.
func (s *Store) Versions(ctx context.Context, key, after string, limit int) (vs []Version, next string, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	name := valueName(key)
	in := &s3.ListObjectVersionsInput{Bucket: &s.bucket, Prefix: &name, MaxKeys: aws.Int32(int32(limit))}
	if after != "" {
		in.KeyMarker, in.VersionIdMarker = &name, &after
	}
	raw := &bytes.Buffer{}
	out, err := s.s3.ListObjectVersions(context.WithValue(ctx, rawAnswer{}, raw), in)
	if err != nil {
		return nil, "", failObject("list versions", after, err)
	}
	for _, v := range out.Versions {
		if aws.ToString(v.Key) == name { // the prefix also selects longer keys
			vs = append(vs, Version{Version: aws.ToString(v.VersionId), Size: aws.ToInt64(v.Size),
				ETag: aws.ToString(v.ETag), LastModified: aws.ToTime(v.LastModified), Latest: aws.ToBool(v.IsLatest)})
		}
	}
	for _, d := range out.DeleteMarkers {
		if aws.ToString(d.Key) == name {
			vs = append(vs, Version{Version: aws.ToString(d.VersionId), LastModified: aws.ToTime(d.LastModified),
				Latest: aws.ToBool(d.IsLatest), Deleted: true})
		}
	}
	rank := s3Order(raw.String())
	slices.SortFunc(vs, func(a, b Version) int { return rank[a.Version] - rank[b.Version] })
	if aws.ToBool(out.IsTruncated) && len(vs) == len(out.Versions)+len(out.DeleteMarkers) && len(vs) > 0 {
		next = vs[len(vs)-1].Version
	}
	return vs, next, nil
}

// s3Order ranks the version ids of a ListObjectVersions answer in the order S3 gave them, which the SDK loses
// by splitting versions from delete markers (and timestamps cannot restore: AWS gives whole seconds).
func s3Order(raw string) map[string]int {
	rank := map[string]int{}
	for _, el := range strings.Split(raw, "<VersionId>")[1:] {
		id, _, _ := strings.Cut(el, "</VersionId>")
		rank[id] = len(rank)
	}
	return rank
}

func errorCode(err error) string {
	var api interface{ ErrorCode() string }
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// sentinels are the store's errors for the S3 error codes it understands. (Versity's POSIX gateway answers
// ExistingObjectIsDirectory for a path segment too long to be a folder.)
var sentinels = map[string]error{"NoSuchKey": ErrNotFound, "NotFound": ErrNotFound, "NoSuchVersion": ErrNotFound,
	"PreconditionFailed": ErrPrecondition, "ConditionalRequestConflict": ErrPrecondition,
	"KeyTooLongError": ErrBadKey, "XMinioInvalidObjectName": ErrBadKey, "InvalidObjectName": ErrBadKey,
	"ExistingObjectIsDirectory": ErrBadKey, "NoSuchBucket": ErrNoBucket, "AccessDenied": ErrDenied,
	"Forbidden": ErrDenied, "InvalidAccessKeyId": ErrDenied, "SignatureDoesNotMatch": ErrDenied}

// fail names the S3 operation and adds the store's sentinel for the answers it understands; the S3 error
// stays the cause, for the log. Keys stay out: they can be personal data.
func fail(op string, err error) error { return wrap(op, sentinels[errorCode(err)], err) }

// failObject is fail for a call on one object, which may name a version: a malformed id is InvalidArgument
// (a bare 400 for HEAD), an unknown one NoSuchVersion (NotFound for HEAD), a delete marker MethodNotAllowed.
// Any other bare 400 is S3's fault (an expired session token, say): kv checks the names it makes.
func failObject(op, version string, err error) error {
	switch code := errorCode(err); {
	case version != "" && (code == "InvalidArgument" || code == "BadRequest"):
		return wrap(op, ErrBadVersion, err)
	case version != "" && (code == "MethodNotAllowed" || sentinels[code] == ErrNotFound):
		return wrap(op, ErrNoVersion, err)
	}
	return fail(op, err)
}

// wrap says what happened: S3's answer (its code, and the sentinel for it), or no answer in time (kv's S3
// calls end only by S3_TIMEOUT, or by shutdown), or the transport's error.
func wrap(op string, sentinel, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return fmt.Errorf("s3 %s: no answer within S3_TIMEOUT: %w", op, err)
	case sentinel == nil:
		return fmt.Errorf("s3 %s: %w", op, err)
	}
	return fmt.Errorf("s3 %s: %w: %w", op, sentinel, err)
}

func meta(size *int64, etag, ctype *string, mod *time.Time, md map[string]string, version *string) Meta {
	m := Meta{Size: aws.ToInt64(size), ETag: aws.ToString(etag), ContentType: aws.ToString(ctype),
		LastModified: aws.ToTime(mod), Version: aws.ToString(version)}
	m.ExpiresAt, _ = time.Parse(time.RFC3339Nano, md[expiresMeta])
	return m
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// etagMatch reports whether an If-Match or If-None-Match list names etag. If-Match compares strongly (a weak
// tag never matches), If-None-Match weakly (RFC 9110 §13.1.1, §13.1.2).
func etagMatch(list, etag string, weak bool) bool {
	return slices.ContainsFunc(strings.Split(list, ","), func(t string) bool {
		t = strings.TrimSpace(t)
		return t == "*" || t == etag || weak && strings.TrimPrefix(t, "W/") == etag
	})
}

// idleConn fails a read or write to S3 that makes no progress for timeout: an S3 that stalls mid-answer or
// mid-upload. A write moves the read deadline on too, since net/http reads ahead for the answer.
type idleConn struct {
	net.Conn
	timeout time.Duration
}

func (c idleConn) Read(p []byte) (int, error) {
	c.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c idleConn) Write(p []byte) (int, error) {
	c.SetDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// cache is an LRU of small values, bounded by what its entries take in memory (entryOverhead covers what an
// entry holds besides its key and value). One mutex guards it, never held during I/O; entries are immutable.
//
// Nothing stale: a write drops its key when it begins and again when it ends, and a miss fills the cache only
// if no write to its key was under way at any time since the miss began. Keys hash into slots, each counting
// the writes under way and moving its gen whenever one begins or ends; a miss notes its slot's gen. A write
// whose outcome is unknown (S3 gave no answer: it may still apply the write) keeps its slot's keys out of the
// cache for unsureFor.
type cache struct {
	mu                      sync.Mutex
	max, used               int64
	freshFor, unsureFor     time.Duration // freshFor 0: entries stay until evicted or dropped
	ll                      list.List     // front: most recently used
	items                   map[string]*list.Element
	seed                    maphash.Seed
	slots                   [4096]slot
	hits, misses, evictions int64
}

type slot struct {
	writes, gen  int
	noFillBefore time.Time
}

type cacheEntry struct {
	key    string
	value  []byte
	meta   Meta
	stored time.Time
}

// entryOverhead is what a cached entry takes besides its key and value: the entry, its list element, its map
// slot and Meta's strings. TestCacheCountsWhatItHolds measures it.
const entryOverhead = 512

func newCache(maxBytes int64, freshFor, unsureFor time.Duration) *cache {
	if maxBytes <= 0 {
		return nil
	}
	return &cache{max: maxBytes, freshFor: freshFor, unsureFor: unsureFor, items: map[string]*list.Element{},
		seed: maphash.MakeSeed()}
}

func (c *cache) fits(size int64) bool { return size+entryOverhead <= min(cacheMaxItem, c.max) }

func (c *cache) slot(key string) *slot {
	return &c.slots[maphash.String(c.seed, key)%uint64(len(c.slots))]
}

// get returns a fresh entry, or nil and the gen to hand to fill once the miss has read S3.
func (c *cache) get(key string, now time.Time) (*cacheEntry, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cacheEntry)
		live := e.meta.ExpiresAt.IsZero() || now.Before(e.meta.ExpiresAt)
		if live && (c.freshFor == 0 || now.Sub(e.stored) < c.freshFor) {
			c.ll.MoveToFront(el)
			c.hits++
			return e, 0
		}
		c.remove(el)
	}
	c.misses++
	return nil, c.slot(key).gen
}

// fill keeps what a miss read unless a write to its key began, ended or ran since the miss.
func (c *cache) fill(e *cacheEntry, gen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := c.slot(e.key)
	if slot.gen != gen || slot.writes != 0 || time.Now().Before(slot.noFillBefore) {
		return
	}
	if el, ok := c.items[e.key]; ok {
		c.remove(el)
	}
	c.items[e.key] = c.ll.PushFront(e)
	c.used += entrySize(e)
	for c.used > c.max {
		c.remove(c.ll.Back())
		c.evictions++
	}
}

// writing notes a write to key beginning (delta +1) or ending (-1, with its error), and drops the key. A
// failed write's outcome is unknown when its error carries no S3 error code (kv's own precondition aside).
func (c *cache) writing(key string, delta int, err error) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.remove(el)
	}
	slot := c.slot(key)
	slot.writes += delta
	slot.gen++
	if delta < 0 && err != nil && errorCode(err) == "" && !errors.Is(err, ErrPrecondition) {
		slot.noFillBefore = time.Now().Add(c.unsureFor)
	}
}

func (c *cache) remove(el *list.Element) {
	e := c.ll.Remove(el).(*cacheEntry)
	delete(c.items, e.key)
	c.used -= entrySize(e)
}

func entrySize(e *cacheEntry) int64 { return int64(len(e.key)+cap(e.value)) + entryOverhead }
