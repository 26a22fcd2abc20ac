package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// Object layout in the bucket: a key's value is valuePrefix + objectPath(key), and each TTL write adds an
// index entry indexPrefix + <expiry second> + "/" + objectPath(key), so every object kv touches stays in
// its own key space.
const (
	valuePrefix = "v/"
	indexPrefix = "t/"
	indexWidth  = 11 // zero-padded unix seconds, so index entries list in expiry order
	// maxObjectKey is S3's limit on an object's name; keys up to maxObjectKey-15 bytes always fit.
	maxObjectKey = 1024
	expiresMeta  = "expires-at" // user metadata holding a value's expiry, RFC 3339 with nanoseconds
)

// objectPath names a key's object: every "!" doubled, then one "!" at the end. MinIO keeps objects as
// folders on disk and cannot list both "a" and "a/b"; here an object's name ends in an odd run of "!" and a
// folder's never does, so no object is a folder of another, and the object sits as deep as the key does.
// "!" sorts before every other printable character but space, so names list in the keys' byte order.
// prefix=true encodes a listing prefix (no end marker).
func objectPath(key string, prefix bool) string {
	p := strings.ReplaceAll(key, "!", "!!")
	if prefix {
		return p
	}
	return p + "!"
}

func valueName(key string) string { return valuePrefix + objectPath(key, false) }

// keyOf inverts objectPath for an object name found under prefix.
func keyOf(prefix, name string) (string, bool) {
	path, ok := strings.CutPrefix(name, prefix)
	key := strings.ReplaceAll(strings.TrimSuffix(path, "!"), "!!", "!")
	return key, ok && objectPath(key, false) == path
}

var (
	ErrNotFound     = errors.New("not found")
	ErrPrecondition = errors.New("precondition failed")
	ErrBadKey       = errors.New("key rejected by storage")
	ErrBadVersion   = errors.New("malformed version id")
	// errDeleteMarker is a delete marker read by version id: not found, for every reader.
	errDeleteMarker = fmt.Errorf("version is a delete marker: %w", ErrNotFound)
)

// s3API is the part of *s3.Client the store calls, so unit tests can hand it a fake.
type s3API interface {
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	HeadBucket(context.Context, *s3.HeadBucketInput, ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
	CreateBucket(context.Context, *s3.CreateBucketInput, ...func(*s3.Options)) (*s3.CreateBucketOutput, error)
	PutBucketVersioning(context.Context, *s3.PutBucketVersioningInput, ...func(*s3.Options)) (*s3.PutBucketVersioningOutput, error)
	GetBucketVersioning(context.Context, *s3.GetBucketVersioningInput, ...func(*s3.Options)) (*s3.GetBucketVersioningOutput, error)
	ListObjectVersions(context.Context, *s3.ListObjectVersionsInput, ...func(*s3.Options)) (*s3.ListObjectVersionsOutput, error)
}

var _ s3API = (*s3.Client)(nil)

// Meta describes one stored value.
type Meta struct {
	Size         int64
	ETag         string // quoted, as S3 returns it
	ContentType  string
	LastModified time.Time
	ExpiresAt    time.Time // zero: never
	Version      string
	header       http.Header // preformatted response headers, kept with a cached value
}

// PutOptions are a write's content type, its HTTP preconditions and its expiry.
type PutOptions struct {
	ContentType string
	IfMatch     string        // an entity tag or *; empty: unconditional
	IfNoneMatch bool          // If-None-Match: *
	TTL         time.Duration // zero: the value never expires
}

// Store keeps values in one S3 bucket. Every S3 call is bounded by timeout; a streamed body is
// bounded by timeout between reads rather than in total, so large values may take as long as they need.
type Store struct {
	s3      s3API
	bucket  string
	timeout time.Duration
	now     func() time.Time
	cache   *cache // nil: off
	// versioned: the bucket keeps every version (S3 bucket versioning), so the version API works.
	versioned bool
}

func newStore(client s3API, bucket string, timeout time.Duration, c *cache) *Store {
	return &Store{s3: client, bucket: bucket, timeout: timeout, now: time.Now, cache: c}
}

func (s *Store) expired(m Meta) bool { return !m.ExpiresAt.IsZero() && !s.now().Before(m.ExpiresAt) }

// Put stores body (size bytes) under key. Preconditions are checked against the live value (an expired
// value counts as absent) and enforced by S3's conditional PutObject, so a concurrent writer cannot slip in.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, size int64, o PutOptions) (Meta, error) {
	var cached *cacheEntry // what the cache holds for key once the write is over: nil, or the new value
	var kept *bytes.Buffer
	if s.cache != nil {
		defer func() { s.cache.put(key, cached) }()
		if s.cache.fits(size) {
			kept = bytes.NewBuffer(make([]byte, 0, size))
			body = io.TeeReader(body, kept)
		}
	}
	in := &s3.PutObjectInput{
		Bucket: &s.bucket, Key: aws.String(valueName(key)), ContentLength: &size,
		ContentType: aws.String(o.ContentType),
	}
	if o.IfMatch != "" || o.IfNoneMatch {
		cur, err := s.Head(ctx, key, "")
		switch {
		case errors.Is(err, ErrNotFound):
			if o.IfMatch != "" {
				return Meta{}, ErrPrecondition
			}
			if cur.ETag != "" { // expired but not yet swept: replace exactly that object
				in.IfMatch = &cur.ETag
			} else {
				in.IfNoneMatch = aws.String("*")
			}
		case err != nil:
			return Meta{}, err
		case o.IfNoneMatch || !etagMatch(o.IfMatch, cur.ETag):
			return Meta{}, ErrPrecondition
		default:
			in.IfMatch = &cur.ETag
		}
	}
	var expires time.Time
	if o.TTL > 0 {
		expires = s.now().Add(o.TTL)
		// The index entry goes first: a crash between the two writes leaves a stale entry, never an
		// expiring value the sweeper cannot find.
		if err := s.putIndex(ctx, key, expires); err != nil {
			return Meta{}, err
		}
		in.Metadata = map[string]string{expiresMeta: expires.UTC().Format(time.RFC3339Nano)}
	}
	ctx, cancel := context.WithCancel(ctx)
	idle := newIdleReader(body, s.timeout, cancel)
	defer idle.Close()
	in.Body = idle
	out, err := s.s3.PutObject(ctx, in)
	if err = s.fail("put", key, err); errors.Is(err, ErrNotFound) && in.IfMatch != nil {
		return Meta{}, ErrPrecondition // deleted since the HEAD: If-Match on an absent key is a 412
	} else if err != nil {
		return Meta{}, err
	}
	m := Meta{Size: size, ETag: aws.ToString(out.ETag), ContentType: o.ContentType, ExpiresAt: expires,
		Version: aws.ToString(out.VersionId), LastModified: s.now().UTC().Truncate(time.Second)}
	if kept != nil && int64(kept.Len()) == size {
		cm := m
		cm.header = valueHeader(m)
		cached = &cacheEntry{key: key, value: kept.Bytes(), meta: cm, stored: s.now()}
	}
	return m, nil
}

func (s *Store) putIndex(ctx context.Context, key string, at time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(indexKey(key, at)),
		ContentLength: aws.Int64(0), Body: strings.NewReader("")})
	return s.fail("put index", key, err)
}

// indexKey rounds the expiry up to the second, so an entry is due only once its value has expired.
func indexKey(key string, at time.Time) string {
	sec := at.Unix()
	if at.Nanosecond() > 0 {
		sec++
	}
	return fmt.Sprintf("%s%0*d/%s", indexPrefix, indexWidth, sec, objectPath(key, false))
}

// Get returns the value's body, which the caller must close. An expired value is ErrNotFound. With the
// cache on, small values come from memory, and concurrent misses on one key share one S3 GET.
func (s *Store) Get(ctx context.Context, key, version string) (io.ReadCloser, Meta, error) {
	if s.cache == nil || version != "" {
		return s.getObject(ctx, key, version)
	}
	e, f, leader, gen := s.cache.get(key, s.now())
	switch {
	case e != nil:
		return newMemBody(e.value), e.meta, nil
	case !leader:
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, Meta{}, ctx.Err()
		}
		if f.entry != nil {
			return newMemBody(f.entry.value), f.entry.meta, nil
		}
		if errors.Is(f.err, ErrNotFound) {
			return nil, Meta{}, ErrNotFound
		}
		return s.getObject(ctx, key, "") // too large to share, or the leader failed: ask for ourselves
	}
	defer s.cache.finish(key, f, gen)
	body, m, err := s.getObject(ctx, key, "")
	if f.err = err; err != nil || !s.cache.fits(m.Size) {
		return body, m, err
	}
	value := make([]byte, m.Size)
	_, err = io.ReadFull(body, value)
	body.Close()
	if err != nil {
		f.err = s.fail("get", key, err)
		return nil, Meta{}, f.err
	}
	m.header = valueHeader(m)
	f.entry = &cacheEntry{key: key, value: value, meta: m, stored: s.now()}
	return newMemBody(value), m, nil
}

// memBody serves a value held in memory (one allocation, where NopCloser over a bytes.Reader takes two).
type memBody struct{ bytes.Reader }

func newMemBody(b []byte) *memBody { m := &memBody{}; m.Reset(b); return m }
func (*memBody) Close() error      { return nil }

func (s *Store) getObject(ctx context.Context, key, version string) (io.ReadCloser, Meta, error) {
	ctx, cancel := context.WithCancel(ctx)
	timer := time.AfterFunc(s.timeout, cancel)
	out, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)),
		VersionId: nonEmpty(version)})
	timer.Stop()
	if err != nil {
		cancel()
		return nil, Meta{}, s.failVersion("get", key, version, err)
	}
	m := meta(out.ContentLength, out.ETag, out.ContentType, out.LastModified, out.Metadata, out.VersionId)
	if s.expired(m) {
		out.Body.Close()
		cancel()
		return nil, m, ErrNotFound
	}
	return newIdleReader(out.Body, s.timeout, cancel), m, nil
}

// Head returns the value's metadata. An expired value is ErrNotFound, with its metadata.
func (s *Store) Head(ctx context.Context, key, version string) (Meta, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)),
		VersionId: nonEmpty(version)})
	if err != nil {
		return Meta{}, s.failVersion("head", key, version, err)
	}
	m := meta(out.ContentLength, out.ETag, out.ContentType, out.LastModified, out.Metadata, out.VersionId)
	if s.expired(m) {
		return m, ErrNotFound
	}
	return m, nil
}

// Delete removes key; ErrNotFound when it is absent or expired. S3's DeleteObject succeeds on absent
// keys, so a HEAD comes first; a write racing between the two is deleted, as if it came just before.
func (s *Store) Delete(ctx context.Context, key string) error {
	if s.cache != nil {
		defer s.cache.put(key, nil)
	}
	m, err := s.Head(ctx, key, "")
	if err != nil && (!errors.Is(err, ErrNotFound) || m.ETag == "") {
		return err
	}
	if derr := s.deleteObject(ctx, valueName(key), "", ""); derr != nil {
		return s.fail("delete", key, derr)
	}
	return err // nil, or ErrNotFound for an expired value that is now reclaimed
}

// deleteObject deletes an object, only if it still has the ETag ifMatch (when given; MinIO ignores it),
// or exactly one version of it (when given).
func (s *Store) deleteObject(ctx context.Context, objectKey, ifMatch, version string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &objectKey,
		IfMatch: nonEmpty(ifMatch), VersionId: nonEmpty(version)})
	return err
}

// List returns up to limit live keys starting with prefix, after the key cursor names, in the order of their
// object names. next is the last key of the page when more may follow. Expired keys the sweeper has not
// removed yet are found through the TTL index (one LIST of due entries), not with a request per key.
func (s *Store) List(ctx context.Context, prefix, after string, limit int) (keys []string, next string, err error) {
	lctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// One object more than the page needs proves that more follow: MinIO can answer IsTruncated=false
	// with objects still to come (seen with start-after and small max-keys).
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(valuePrefix + objectPath(prefix, true)),
		MaxKeys: aws.Int32(int32(min(limit+1, 1000)))}
	if after != "" {
		in.StartAfter = aws.String(valueName(after))
	}
	out, err := s.s3.ListObjectsV2(lctx, in)
	if err != nil {
		return nil, "", s.fail("list", prefix, err)
	}
	more := len(out.Contents) > limit || aws.ToBool(out.IsTruncated)
	objects := out.Contents[:min(limit, len(out.Contents))]
	due, err := s.dueIndex(ctx, s.now().Add(time.Second))
	if err != nil {
		return nil, "", err
	}
	for _, o := range objects {
		key, ok := keyOf(valuePrefix, aws.ToString(o.Key))
		if !ok || !strings.HasPrefix(key, prefix) { // not a name kv wrote
			continue
		}
		next = key
		if _, ok := due[key]; ok {
			if _, err := s.Head(ctx, key, ""); errors.Is(err, ErrNotFound) {
				continue
			} else if err != nil {
				return nil, "", err
			}
		}
		keys = append(keys, key)
	}
	if !more {
		next = ""
	}
	return keys, next, nil
}

// dueIndex lists the TTL index entries due by until: key → its entries' object names.
func (s *Store) dueIndex(ctx context.Context, until time.Time) (map[string][]string, error) {
	due := map[string][]string{}
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(indexPrefix)}
	for {
		lctx, cancel := context.WithTimeout(ctx, s.timeout)
		out, err := s.s3.ListObjectsV2(lctx, in)
		cancel()
		if err != nil {
			return nil, s.fail("list index", "", err)
		}
		for _, o := range out.Contents {
			entry := aws.ToString(o.Key)
			sec, path, _ := strings.Cut(strings.TrimPrefix(entry, indexPrefix), "/")
			n, err := strconv.ParseInt(sec, 10, 64)
			key, ok := keyOf("", path)
			if err != nil || !ok {
				continue // not kv's
			}
			if n > until.Unix() {
				return due, nil
			}
			due[key] = append(due[key], entry)
		}
		if !aws.ToBool(out.IsTruncated) {
			return due, nil
		}
		in.ContinuationToken = out.NextContinuationToken
	}
}

// Sweep deletes the values whose expiry has passed, finding them through the TTL index, so its work grows
// with the number of due entries, not with the bucket. Its delete carries If-Match, so a value rewritten
// after the sweeper looked survives where S3 honours that (AWS); MinIO ignores it, leaving the window
// between the HEAD and the DELETE. It returns how many values it deleted.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	// Entries name the second after their expiry, so look one second ahead: a value that expired
	// earlier in this second goes now, not one interval later. The HEAD decides.
	due, err := s.dueIndex(ctx, s.now().Add(time.Second))
	if err != nil {
		return 0, err
	}
	deleted := 0
	for key, entries := range due {
		m, err := s.Head(ctx, key, "")
		if err == nil && !m.ExpiresAt.IsZero() { // live: keep its own entry, drop the stale ones
			entries = slices.DeleteFunc(entries, func(e string) bool { return e == indexKey(key, m.ExpiresAt) })
		}
		if errors.Is(err, ErrNotFound) && m.ETag != "" {
			err = s.fail("sweep", key, s.deleteObject(ctx, valueName(key), m.ETag, ""))
			if err == nil && s.versioned {
				// That left a delete marker on top, so no older version resurfaces; now remove exactly the
				// expired version, which a racing rewrite cannot be.
				err = s.fail("sweep version", key, s.deleteObject(ctx, valueName(key), "", m.Version))
			}
			if err == nil {
				deleted++
			}
		}
		if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrPrecondition) {
			return deleted, err
		}
		for _, e := range entries {
			if err := s.deleteObject(ctx, e, "", ""); err != nil {
				return deleted, s.fail("sweep index", key, err)
			}
		}
	}
	return deleted, nil
}

// SetupVersioning turns bucket versioning on when enable is set, then notes whether the bucket is versioned
// (it may have been already): only then does the version API work.
func (s *Store) SetupVersioning(ctx context.Context, enable bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if enable {
		_, err := s.s3.PutBucketVersioning(ctx, &s3.PutBucketVersioningInput{Bucket: &s.bucket,
			VersioningConfiguration: &types.VersioningConfiguration{Status: types.BucketVersioningStatusEnabled}})
		if err != nil {
			return fmt.Errorf("enabling versioning on bucket %q: %w", s.bucket, err)
		}
	}
	out, err := s.s3.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: &s.bucket})
	if err != nil {
		return fmt.Errorf("reading the versioning of bucket %q: %w", s.bucket, err)
	}
	s.versioned = out.Status == types.BucketVersioningStatusEnabled
	if enable && !s.versioned {
		return fmt.Errorf("bucket %q: versioning is %q after enabling it", s.bucket, out.Status)
	}
	return nil
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

// Versions lists key's history newest first, up to limit entries after the version id after; next is the
// last version returned when more may follow.
func (s *Store) Versions(ctx context.Context, key, after string, limit int) (vs []Version, next string, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	name := valueName(key)
	in := &s3.ListObjectVersionsInput{Bucket: &s.bucket, Prefix: &name, MaxKeys: aws.Int32(int32(min(limit+1, 1000)))}
	if after != "" {
		in.KeyMarker, in.VersionIdMarker = &name, &after
	}
	out, err := s.s3.ListObjectVersions(ctx, in)
	if err != nil {
		return nil, "", s.failVersion("list versions", key, after, err)
	}
	for _, v := range out.Versions {
		if aws.ToString(v.Key) == name { // the prefix also selects longer keys
			vs = append(vs, Version{Version: aws.ToString(v.VersionId), Size: aws.ToInt64(v.Size), ETag: aws.ToString(v.ETag),
				LastModified: aws.ToTime(v.LastModified), Latest: aws.ToBool(v.IsLatest)})
		}
	}
	for _, d := range out.DeleteMarkers {
		if aws.ToString(d.Key) == name {
			vs = append(vs, Version{Version: aws.ToString(d.VersionId), LastModified: aws.ToTime(d.LastModified),
				Latest: aws.ToBool(d.IsLatest), Deleted: true})
		}
	}
	// S3 returns versions and delete markers apart; the history is one list, newest first.
	slices.SortStableFunc(vs, func(a, b Version) int {
		return cmp.Or(b.LastModified.Compare(a.LastModified), cmp.Compare(btoi(b.Latest), btoi(a.Latest)))
	})
	if len(vs) > limit || aws.ToBool(out.IsTruncated) && len(vs) > 0 {
		vs = vs[:min(limit, len(vs))]
		next = vs[len(vs)-1].Version
	}
	return vs, next, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// DeleteVersion removes one version of key for good; ErrNotFound when there is no such version.
func (s *Store) DeleteVersion(ctx context.Context, key, version string) error {
	if s.cache != nil {
		defer s.cache.put(key, nil) // the key's current version may change
	}
	// S3 deletes an unknown version without complaint, so look first. A delete marker may be deleted too
	// (which brings back the version below it).
	m, err := s.Head(ctx, key, version)
	switch {
	case errors.Is(err, errDeleteMarker):
	case errors.Is(err, ErrNotFound) && m.ETag == "":
		return ErrNotFound
	case err != nil && !errors.Is(err, ErrNotFound): // an expired version may go
		return err
	}
	return s.failVersion("delete version", key, version, s.deleteObject(ctx, valueName(key), "", version))
}

// Ready reports whether the bucket answers.
func (s *Store) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	return s.fail("head bucket", s.bucket, err)
}

// EnsureBucket checks the bucket and, when create is set, creates it if it is missing.
func (s *Store) EnsureBucket(ctx context.Context, create bool) error {
	err := s.Ready(ctx)
	if !errors.Is(err, ErrNotFound) || !create {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err = s.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.bucket})
	var owned *types.BucketAlreadyOwnedByYou
	if errors.As(err, &owned) {
		return nil
	}
	return s.fail("create bucket", s.bucket, err)
}

// fail turns S3's answers into the store's sentinels and wraps everything else with operation and key.
func (s *Store) fail(op, key string, err error) error {
	if err == nil {
		return nil
	}
	if sentinel := classify(err); sentinel != nil {
		return sentinel
	}
	return fmt.Errorf("s3 %s %q: %w", op, key, err)
}

// failVersion is fail for a call naming a version: S3 answers a malformed id with InvalidArgument (GET) or a
// bare 400 (HEAD), and a delete marker read by id with MethodNotAllowed.
func (s *Store) failVersion(op, key, version string, err error) error {
	var api smithy.APIError
	if version != "" && errors.As(err, &api) {
		switch api.ErrorCode() {
		case "InvalidArgument", "BadRequest":
			return ErrBadVersion
		case "MethodNotAllowed":
			return errDeleteMarker
		}
	}
	return s.fail(op, key, err)
}

// classify returns the store's sentinel for an S3 error, or nil when it has none.
func classify(err error) error {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var nb *types.NoSuchBucket
	var api smithy.APIError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &nsk), errors.As(err, &nf), errors.As(err, &nb):
		return ErrNotFound
	case !errors.As(err, &api):
		return nil
	}
	switch api.ErrorCode() {
	case "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchVersion":
		return ErrNotFound
	case "PreconditionFailed", "ConditionalRequestConflict":
		return ErrPrecondition
	case "KeyTooLongError", "XMinioInvalidObjectName", "InvalidObjectName", "BadRequest": // HEAD's 400 has no code
		return ErrBadKey
	}
	return nil
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

// etagMatch reports whether an If-Match/If-None-Match list names etag (weak comparison, as for GET).
func etagMatch(list, etag string) bool {
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || (t != "" && strings.Trim(t, `"`) == strings.Trim(etag, `"`)) {
			return true
		}
	}
	return false
}

// idleReader cancels its S3 call when timeout passes without a Read, whichever side stalls, and
// releases the call's context on Close.
type idleReader struct {
	r      io.Reader
	t      *time.Timer
	d      time.Duration
	cancel context.CancelFunc
}

func newIdleReader(r io.Reader, d time.Duration, cancel context.CancelFunc) *idleReader {
	return &idleReader{r: r, t: time.AfterFunc(d, cancel), d: d, cancel: cancel}
}

func (r *idleReader) Read(p []byte) (int, error) {
	r.t.Reset(r.d)
	return r.r.Read(p)
}

func (r *idleReader) Close() error {
	r.t.Stop()
	r.cancel()
	if c, ok := r.r.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
