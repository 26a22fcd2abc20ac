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
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Object layout: a key's value is valuePrefix + objectPath(key); each TTL write adds the index entry
// indexPrefix + <expiry second> + "/" + objectPath(key). No key can name an object outside its prefix.
const (
	valuePrefix  = "v/"
	indexPrefix  = "t/"
	indexWidth   = 11   // zero-padded Unix seconds, so index entries list in expiry order
	maxObjectKey = 1024 // S3's limit on an object name; keys up to maxObjectKey-15 bytes always fit
	expiresMeta  = "expires-at"
	sweepPage    = 1000 // index entries per step: the most one LIST returns and one DeleteObjects takes
	inFlight     = 32   // HEADs at once while sweeping or listing
	cacheMaxItem = 1 << 20
)

var (
	ErrNotFound     = errors.New("not found")
	ErrPrecondition = errors.New("precondition failed")
	ErrBadKey       = errors.New("key rejected by storage")
	ErrBadVersion   = errors.New("malformed version id")
	ErrNoBucket     = errors.New("bucket does not exist")
)

// objectPath names a key's object: every "!" doubled, then one "!" at the end. MinIO keeps objects as
// folders on disk and cannot list both "a" and "a/b"; here an object's name ends in an odd run of "!" and a
// folder's never does. "!" sorts before every printable character but space, so names keep the keys' order.
// prefix=true encodes a listing prefix (no end marker).
func objectPath(key string, prefix bool) string {
	p := strings.ReplaceAll(key, "!", "!!")
	if prefix {
		return p
	}
	return p + "!"
}

func valueName(key string) string { return valuePrefix + objectPath(key, false) }

// keyOf inverts objectPath; ok is false for a name kv did not make.
func keyOf(path string) (string, bool) {
	key := strings.ReplaceAll(strings.TrimSuffix(path, "!"), "!!", "!")
	return key, objectPath(key, false) == path
}

// indexKey rounds the expiry up to the second, so an entry is due only once its value has expired.
func indexKey(key string, at time.Time) string {
	sec := at.Unix()
	if at.Nanosecond() > 0 {
		sec++
	}
	return fmt.Sprintf("%s%0*d/%s", indexPrefix, indexWidth, sec, objectPath(key, false))
}

// s3API is the part of *s3.Client the store calls, so unit tests can hand it a fake.
type s3API interface {
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
	DeleteObjects(context.Context, *s3.DeleteObjectsInput, ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error)
	ListObjectsV2(context.Context, *s3.ListObjectsV2Input, ...func(*s3.Options)) (*s3.ListObjectsV2Output, error)
	ListObjectVersions(context.Context, *s3.ListObjectVersionsInput,
		...func(*s3.Options)) (*s3.ListObjectVersionsOutput, error)
	HeadBucket(context.Context, *s3.HeadBucketInput, ...func(*s3.Options)) (*s3.HeadBucketOutput, error)
	CreateBucket(context.Context, *s3.CreateBucketInput, ...func(*s3.Options)) (*s3.CreateBucketOutput, error)
	PutBucketVersioning(context.Context, *s3.PutBucketVersioningInput,
		...func(*s3.Options)) (*s3.PutBucketVersioningOutput, error)
	GetBucketVersioning(context.Context, *s3.GetBucketVersioningInput,
		...func(*s3.Options)) (*s3.GetBucketVersioningOutput, error)
}

var _ s3API = (*s3.Client)(nil)

// Meta describes one stored value.
type Meta struct {
	Size         int64       `json:"size"`
	ETag         string      `json:"etag"` // quoted, as S3 returns it
	ContentType  string      `json:"-"`
	LastModified time.Time   `json:"-"`
	ExpiresAt    time.Time   `json:"expires_at,omitzero"` // zero: never
	Version      string      `json:"version,omitempty"`
	header       http.Header // response headers, formatted once for a cached value
}

// PutOptions are a write's content type, preconditions and expiry.
type PutOptions struct {
	ContentType string
	IfMatch     string        // an entity-tag list or *; empty: unconditional
	IfNoneMatch bool          // If-None-Match: *
	TTL         time.Duration // zero: never expires
}

// Store keeps values in one S3 bucket. Each S3 call is bounded by timeout; a value's stream is bounded by
// timeout without progress rather than in total, so a large value takes as long as it needs.
type Store struct {
	s3      s3API
	bucket  string
	timeout time.Duration
	now     func() time.Time
	cache   *cache // nil: off
	// ready is set once Setup has checked the bucket; versioned is written before it and read only after.
	ready     atomic.Bool
	versioned bool
}

func newStore(client s3API, bucket string, timeout time.Duration, c *cache) *Store {
	return &Store{s3: client, bucket: bucket, timeout: timeout, now: time.Now, cache: c}
}

func (s *Store) expired(m Meta) bool { return !m.ExpiresAt.IsZero() && !s.now().Before(m.ExpiresAt) }

// Setup checks the bucket (creating it when create is set), enables versioning when asked, notes whether the
// bucket keeps versions, and then marks the store ready.
func (s *Store) Setup(ctx context.Context, create, versioning bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.Ready(ctx)
	if errors.Is(err, ErrNoBucket) && create {
		_, err = s.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &s.bucket})
		if errorCode(err) == "BucketAlreadyOwnedByYou" {
			err = nil
		}
		err = fail("create bucket", err)
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
	if err != nil {
		return fail("get versioning", err)
	}
	if s.versioned = out.Status == types.BucketVersioningStatusEnabled; versioning && !s.versioned {
		return fmt.Errorf("versioning is %q after enabling it", out.Status)
	}
	s.ready.Store(true)
	return nil
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
func (s *Store) Put(ctx context.Context, key string, body io.Reader, size int64, o PutOptions) (Meta, error) {
	s.cache.writing(key, 1)
	defer s.cache.writing(key, -1)
	in := &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)), ContentLength: &size,
		ContentType: &o.ContentType}
	if err := s.precondition(ctx, key, o, in); err != nil {
		return Meta{}, err
	}
	m := Meta{Size: size, ContentType: o.ContentType}
	if o.TTL > 0 {
		// The index entry goes first: a crash in between leaves a stale entry, never a value nothing reclaims.
		m.ExpiresAt = s.now().Add(o.TTL).UTC()
		ictx, cancel := context.WithTimeout(ctx, s.timeout)
		_, err := s.s3.PutObject(ictx, &s3.PutObjectInput{Bucket: &s.bucket,
			Key: aws.String(indexKey(key, m.ExpiresAt)), ContentLength: aws.Int64(0), Body: strings.NewReader("")})
		if cancel(); err != nil {
			return Meta{}, fail("put index", err)
		}
		in.Metadata = map[string]string{expiresMeta: m.ExpiresAt.UTC().Format(time.RFC3339Nano)}
	}
	ctx, cancel := context.WithCancel(ctx)
	idle := &idleReader{r: body, t: time.AfterFunc(s.timeout, cancel), d: s.timeout, cancel: cancel}
	defer idle.Close()
	in.Body = idle
	out, err := s.s3.PutObject(ctx, in)
	if err = fail("put", err); errors.Is(err, ErrNotFound) && in.IfMatch != nil {
		return Meta{}, ErrPrecondition // deleted since the HEAD: If-Match on an absent key
	} else if err != nil {
		return Meta{}, err
	}
	m.ETag, m.Version = aws.ToString(out.ETag), aws.ToString(out.VersionId)
	return m, nil
}

// precondition checks a conditional write against the live value and makes the PutObject conditional on
// exactly the object it checked.
func (s *Store) precondition(ctx context.Context, key string, o PutOptions, in *s3.PutObjectInput) error {
	if o.IfMatch == "" && !o.IfNoneMatch {
		return nil
	}
	cur, err := s.Head(ctx, key, "")
	switch {
	case errors.Is(err, ErrNotFound) && o.IfMatch != "":
		return ErrPrecondition
	case errors.Is(err, ErrNotFound) && cur.ETag != "": // expired, not swept yet: replace exactly that object
		in.IfMatch = &cur.ETag
	case errors.Is(err, ErrNotFound):
		in.IfNoneMatch = aws.String("*")
	case err != nil:
		return err
	case o.IfNoneMatch || !etagMatch(o.IfMatch, cur.ETag, false):
		return ErrPrecondition
	default:
		in.IfMatch = &cur.ETag
	}
	return nil
}

// Get returns the value's body, which the caller must close; an expired value is ErrNotFound. With the cache
// on, small values come from memory.
func (s *Store) Get(ctx context.Context, key, version string) (io.ReadCloser, Meta, error) {
	if s.cache == nil || version != "" {
		return s.getObject(ctx, key, version)
	}
	e, gen := s.cache.get(key, s.now())
	if e != nil {
		return newMemBody(e.value), e.meta, nil
	}
	defer func() { s.cache.fill(key, gen, e) }()
	body, m, err := s.getObject(ctx, key, "")
	if err != nil || !s.cache.fits(m.Size) {
		return body, m, err
	}
	value := make([]byte, m.Size)
	_, err = io.ReadFull(body, value)
	if body.Close(); err != nil {
		return nil, Meta{}, fmt.Errorf("s3 get: reading the value: %w", err)
	}
	m.header = valueHeader(m)
	e = &cacheEntry{key: key, value: value, meta: m, stored: s.now()}
	return newMemBody(value), m, nil
}

// memBody serves a value held in memory (one allocation, where NopCloser over a bytes.Reader takes two).
type memBody struct{ bytes.Reader }

func newMemBody(b []byte) *memBody { m := &memBody{}; m.Reset(b); return m }
func (*memBody) Close() error      { return nil }

func (s *Store) getObject(ctx context.Context, key, version string) (io.ReadCloser, Meta, error) {
	ctx, cancel := context.WithCancel(ctx)
	idle := &idleReader{t: time.AfterFunc(s.timeout, cancel), d: s.timeout, cancel: cancel, download: true}
	out, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)),
		VersionId: nonEmpty(version)})
	if err != nil {
		idle.Close()
		return nil, Meta{}, failObject("get", version, err)
	}
	idle.r = out.Body
	m := meta(out.ContentLength, out.ETag, out.ContentType, out.LastModified, out.Metadata, out.VersionId)
	if s.expired(m) {
		idle.Close()
		return nil, m, ErrNotFound
	}
	return idle, m, nil
}

// Head returns the value's metadata; an expired value is ErrNotFound, with its metadata. S3 answers a HEAD in
// a missing bucket as if the key were missing (a 404 without a body), so an absence is checked with the bucket.
func (s *Store) Head(ctx context.Context, key, version string) (Meta, error) {
	m, err := s.head(ctx, key, version)
	if errors.Is(err, ErrNotFound) && m.ETag == "" {
		if berr := s.Ready(ctx); berr != nil {
			return m, berr
		}
	}
	return m, err
}

// head is Head for callers that have just seen the bucket answer.
func (s *Store) head(ctx context.Context, key, version string) (Meta, error) {
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
// deletes whether or not there was anything, so whether this call removed a value is unknowable.
func (s *Store) Delete(ctx context.Context, key, version string) error {
	s.cache.writing(key, 1)
	defer s.cache.writing(key, -1)
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)),
		VersionId: nonEmpty(version)})
	return failObject("delete", version, err)
}

// List returns up to limit live keys under prefix, in the order of their object names, after the object path
// cursor names. The cursor is an object path, not a key, so a walk moves past objects kv did not write. next
// is the cursor of the following page; empty on the last.
func (s *Store) List(ctx context.Context, prefix, cursor string, limit int) (keys []string, next string, err error) {
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(valuePrefix + objectPath(prefix, true))}
	for next = cursor; len(keys) < limit; {
		// One object more than the page needs proves that more follow: MinIO can answer IsTruncated=false
		// with objects still to come (seen with start-after and a small max-keys).
		want := limit - len(keys)
		in.MaxKeys, in.StartAfter = aws.Int32(int32(want+1)), aws.String(valuePrefix+next)
		out, err := s.list(ctx, in, "list")
		if err != nil {
			return nil, "", err
		}
		more := len(out.Contents) > want || aws.ToBool(out.IsTruncated)
		var page []string
		for _, o := range out.Contents[:min(want, len(out.Contents))] {
			next = strings.TrimPrefix(aws.ToString(o.Key), valuePrefix)
			if key, ok := keyOf(next); ok && strings.HasPrefix(key, prefix) {
				page = append(page, key)
			}
		}
		if page, err = s.live(ctx, page); err != nil {
			return nil, "", err
		}
		if keys = append(keys, page...); !more {
			return keys, "", nil
		}
	}
	return keys, next, nil
}

// live drops the keys whose value has expired but is not swept yet. Only keys with a due index entry can be
// such: when the due entries fit in a read the size of the page, only the keys named there are checked,
// else every key of the page is, so a listing never reads more of the index than its page needs.
func (s *Store) live(ctx context.Context, keys []string) ([]string, error) {
	if len(keys) == 0 {
		return keys, nil
	}
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(indexPrefix),
		MaxKeys: aws.Int32(int32(len(keys)))}
	out, err := s.list(ctx, in, "list index")
	if err != nil {
		return nil, err
	}
	due, all := dueEntries(out, s.now())
	check := keys
	if all {
		check = nil
		for _, e := range due {
			check = append(check, e.key)
		}
	}
	heads := s.heads(ctx, check)
	keys = slices.DeleteFunc(keys, func(k string) bool {
		h, ok := heads[k]
		if ok && h.err != nil && !errors.Is(h.err, ErrNotFound) {
			err = cmp.Or(err, h.err)
		}
		return ok && errors.Is(h.err, ErrNotFound)
	})
	return keys, err
}

type headResult struct {
	meta Meta
	err  error
}

// heads HEADs keys, inFlight at a time.
func (s *Store) heads(ctx context.Context, keys []string) map[string]headResult {
	results := make(map[string]headResult, len(keys))
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, inFlight)
	for _, key := range keys {
		sem <- struct{}{}
		wg.Go(func() {
			m, err := s.head(ctx, key, "")
			mu.Lock()
			results[key] = headResult{m, err}
			mu.Unlock()
			<-sem
		})
	}
	wg.Wait()
	return results
}

// dueEntry is an index entry whose second has come (or comes within the next one).
type dueEntry struct{ name, key string }

// dueEntries returns the due entries of a page of the index, and whether the page held every due entry.
// Entries name the second after their expiry, so it looks one second ahead: a value that expired earlier in
// this second goes now; the HEAD decides.
func dueEntries(out *s3.ListObjectsV2Output, now time.Time) (due []dueEntry, all bool) {
	for _, o := range out.Contents {
		name := aws.ToString(o.Key)
		sec, path, _ := strings.Cut(strings.TrimPrefix(name, indexPrefix), "/")
		n, err := strconv.ParseInt(sec, 10, 64)
		if key, ok := keyOf(path); err == nil && ok {
			if n > now.Unix()+1 {
				return due, true
			}
			due = append(due, dueEntry{name, key})
		}
	}
	return due, !aws.ToBool(out.IsTruncated)
}

func (s *Store) list(ctx context.Context, in *s3.ListObjectsV2Input, op string) (*s3.ListObjectsV2Output, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.s3.ListObjectsV2(ctx, in)
	return out, fail(op, err)
}

// Sweep deletes expired values and their index entries, a page of due entries at a time, so its work and
// memory grow with a page, never with the bucket or the backlog. It returns how many values it deleted.
func (s *Store) Sweep(ctx context.Context) (deleted int, err error) {
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(indexPrefix), MaxKeys: aws.Int32(sweepPage)}
	for {
		out, lerr := s.list(ctx, in, "list index")
		if lerr != nil {
			return deleted, lerr
		}
		due, all := dueEntries(out, s.now())
		n, perr := s.sweepPage(ctx, due)
		if deleted, err = deleted+n, cmp.Or(err, perr); all || len(out.Contents) == 0 || ctx.Err() != nil {
			return deleted, err
		}
		in.StartAfter = out.Contents[len(out.Contents)-1].Key // what this page kept stays behind
	}
}

// sweepPage HEADs the keys of due entries in parallel and deletes the expired values in one batch, each on
// the ETag it had: S3 then spares a value rewritten since (MinIO ignores the condition); with versioning that
// lays delete markers, so the expired version stays in the history, as a DELETE leaves it. Another batch then
// drops the entries that are done: an entry stays while it is its live key's own, while its key's HEAD
// failed, or while its value could not be deleted.
func (s *Store) sweepPage(ctx context.Context, due []dueEntry) (int, error) {
	keys := make([]string, 0, len(due))
	for _, e := range due {
		keys = append(keys, e.key)
	}
	slices.Sort(keys)
	heads := s.heads(ctx, slices.Compact(keys))
	var values, done []types.ObjectIdentifier
	for key, h := range heads {
		if errors.Is(h.err, ErrNotFound) && h.meta.ETag != "" {
			values = append(values,
				types.ObjectIdentifier{Key: aws.String(valueName(key)), ETag: aws.String(h.meta.ETag)})
			s.cache.writing(key, 1) // a delete, as far as the cache knows: MinIO may delete a racing rewrite
			defer s.cache.writing(key, -1)
		}
	}
	deleted, failed, err := s.deleteBatch(ctx, values)
	for _, e := range due {
		switch h := heads[e.key]; {
		case h.err != nil && !errors.Is(h.err, ErrNotFound):
			err = cmp.Or(err, h.err)
		case h.err == nil && !h.meta.ExpiresAt.IsZero() && indexKey(e.key, h.meta.ExpiresAt) == e.name:
		case !failed[valueName(e.key)]:
			done = append(done, types.ObjectIdentifier{Key: aws.String(e.name)})
		}
	}
	_, _, derr := s.deleteBatch(ctx, done)
	return deleted, cmp.Or(err, derr)
}

// deleteBatch deletes up to 1000 objects in one request. It returns how many it deleted and which it could
// not; an object that changed or went since it was seen is neither.
func (s *Store) deleteBatch(ctx context.Context, objects []types.ObjectIdentifier) (int, map[string]bool, error) {
	failed := map[string]bool{}
	if len(objects) == 0 {
		return 0, failed, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.s3.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &s.bucket,
		Delete: &types.Delete{Objects: objects, Quiet: aws.Bool(true)}})
	if err != nil {
		for _, o := range objects {
			failed[*o.Key] = true
		}
		return 0, failed, fail("delete batch", err)
	}
	for _, e := range out.Errors {
		if code := aws.ToString(e.Code); code != "PreconditionFailed" && code != "NoSuchKey" {
			failed[aws.ToString(e.Key)] = true
		}
	}
	if len(failed) > 0 {
		err = fmt.Errorf("s3 delete batch: %d of %d objects refused", len(failed), len(objects))
	}
	return len(objects) - len(out.Errors), failed, err
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
		return nil, "", failObject("list versions", after, err)
	}
	add := func(k, id *string, mod *time.Time, latest *bool, v Version) {
		if aws.ToString(k) == name { // the prefix also selects longer keys
			v.Version, v.LastModified, v.Latest = aws.ToString(id), aws.ToTime(mod), aws.ToBool(latest)
			vs = append(vs, v)
		}
	}
	for _, v := range out.Versions {
		add(v.Key, v.VersionId, v.LastModified, v.IsLatest,
			Version{Size: aws.ToInt64(v.Size), ETag: aws.ToString(v.ETag)})
	}
	for _, d := range out.DeleteMarkers {
		add(d.Key, d.VersionId, d.LastModified, d.IsLatest, Version{Deleted: true})
	}
	// S3 returns versions and delete markers apart; the history is one list, newest (and latest) first.
	slices.SortStableFunc(vs, func(a, b Version) int {
		if c := b.LastModified.Compare(a.LastModified); c != 0 || a.Latest == b.Latest {
			return c
		} else if a.Latest {
			return -1
		}
		return 1
	})
	if len(vs) > limit || aws.ToBool(out.IsTruncated) && len(vs) > 0 {
		vs = vs[:min(limit, len(vs))]
		next = vs[len(vs)-1].Version
	}
	return vs, next, nil
}

func errorCode(err error) string {
	var api interface{ ErrorCode() string }
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// sentinels are the store's errors for the S3 error codes it understands.
var sentinels = map[string]error{"NoSuchKey": ErrNotFound, "NotFound": ErrNotFound, "NoSuchVersion": ErrNotFound,
	"PreconditionFailed": ErrPrecondition, "ConditionalRequestConflict": ErrPrecondition, "KeyTooLongError": ErrBadKey,
	"XMinioInvalidObjectName": ErrBadKey, "InvalidObjectName": ErrBadKey, "NoSuchBucket": ErrNoBucket}

// fail names the S3 operation and adds the store's sentinel for the answers it understands; the S3 error
// stays the cause, for the log. Keys stay out: they can be personal data.
func fail(op string, err error) error { return wrap(op, sentinels[errorCode(err)], err) }

// failObject is fail for a call on one key's object. A HEAD's error has no body, so its 400 has no code
// either: there it means a bad key (or version). A malformed version id is InvalidArgument elsewhere, and a
// delete marker read by id is MethodNotAllowed.
func failObject(op, version string, err error) error {
	switch code := errorCode(err); {
	case version != "" && (code == "InvalidArgument" || code == "BadRequest"):
		return wrap(op, ErrBadVersion, err)
	case code == "BadRequest":
		return wrap(op, ErrBadKey, err)
	case code == "MethodNotAllowed":
		return wrap(op, ErrNotFound, err)
	}
	return fail(op, err)
}

func wrap(op string, sentinel, err error) error {
	switch {
	case err == nil:
		return nil
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
	for t := range strings.SplitSeq(list, ",") {
		t = strings.TrimSpace(t)
		if weak {
			t = strings.TrimPrefix(t, "W/")
		}
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// idleReader cancels its S3 call when timeout passes without progress and releases the call on Close. A
// download counts a Read that waits too long (S3 stalls); an upload counts only the time between Reads (S3
// stopped taking the body), since a Read there waits on the client, which has its own deadline.
type idleReader struct {
	r        io.Reader
	t        *time.Timer
	d        time.Duration
	cancel   context.CancelFunc
	download bool
}

func (r *idleReader) Read(p []byte) (int, error) {
	if r.download {
		r.t.Reset(r.d)
		return r.r.Read(p)
	}
	r.t.Stop()
	defer r.t.Reset(r.d)
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

// cache is an LRU of small values, bounded in bytes (key plus value). One mutex guards it, never held during
// I/O; entries are immutable once added.
//
// Nothing stale: a write drops its key when it begins and again when it ends, and a miss fills the cache only
// if no write to its key was under way at any time since the miss began. Keys hash into slots, each counting
// the writes under way and moving its gen whenever one begins or ends; a miss notes its slot's gen. A write
// holds back the fills of its own slot only.
type cache struct {
	mu        sync.Mutex
	max, used int64
	freshFor  time.Duration // 0: entries stay until evicted or dropped
	ll        list.List     // front: most recently used
	items     map[string]*list.Element
	seed      maphash.Seed
	slots     [4096]struct{ writes, gen int }

	hits, misses, evictions atomic.Int64
}

type cacheEntry struct {
	key    string
	value  []byte
	meta   Meta
	stored time.Time
}

func newCache(maxBytes int64, freshFor time.Duration) *cache {
	if maxBytes <= 0 {
		return nil
	}
	return &cache{max: maxBytes, freshFor: freshFor, items: map[string]*list.Element{}, seed: maphash.MakeSeed()}
}

func (c *cache) fits(size int64) bool { return size <= min(cacheMaxItem, c.max) }

func (c *cache) slot(key string) *struct{ writes, gen int } {
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
			c.hits.Add(1)
			return e, 0
		}
		c.remove(el)
	}
	c.misses.Add(1)
	return nil, c.slot(key).gen
}

// fill keeps what a miss read (e may be nil) unless a write to its key began, ended or ran since the miss.
func (c *cache) fill(key string, gen int, e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slot := c.slot(key); e != nil && slot.gen == gen && slot.writes == 0 {
		c.add(e)
	}
}

// writing marks a write to key as begun (+1) or ended (-1); a nil cache ignores it.
func (c *cache) writing(key string, delta int) {
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
}

func (c *cache) add(e *cacheEntry) {
	if el, ok := c.items[e.key]; ok {
		c.remove(el)
	}
	c.items[e.key] = c.ll.PushFront(e)
	for c.used += entrySize(e); c.used > c.max; c.evictions.Add(1) {
		c.remove(c.ll.Back())
	}
}

func (c *cache) remove(el *list.Element) {
	e := c.ll.Remove(el).(*cacheEntry)
	delete(c.items, e.key)
	c.used -= entrySize(e)
}

func entrySize(e *cacheEntry) int64 { return int64(len(e.key) + len(e.value)) }
