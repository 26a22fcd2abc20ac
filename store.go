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
	sweepPage    = 1000 // index entries per LIST while sweeping
	inFlight     = 32   // S3 calls at once while sweeping or listing
	cacheMaxItem = 1 << 20
)

var (
	ErrNotFound     = errors.New("not found")
	ErrPrecondition = errors.New("precondition failed")
	ErrBadKey       = errors.New("key rejected by storage")
	ErrBadVersion   = errors.New("malformed version id")
	ErrNoBucket     = errors.New("bucket does not exist")
	ErrDenied       = errors.New("access denied")
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

// dueSecond rounds an expiry up to the second, so an index entry is due only once its value has expired.
func dueSecond(at time.Time) int64 { return at.Add(time.Second - 1).Unix() }

func indexKey(key string, at time.Time) string {
	return fmt.Sprintf("%s%0*d/%s", indexPrefix, indexWidth, dueSecond(at), objectPath(key, false))
}

// s3API is the part of *s3.Client the store calls, so unit tests can hand it a fake.
type s3API interface {
	PutObject(context.Context, *s3.PutObjectInput, ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	GetObject(context.Context, *s3.GetObjectInput, ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	HeadObject(context.Context, *s3.HeadObjectInput, ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	DeleteObject(context.Context, *s3.DeleteObjectInput, ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
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

// Meta describes one stored value.
type Meta struct {
	Size         int64       `json:"size"`
	ETag         string      `json:"etag"` // quoted, as S3 returns it
	ContentType  string      `json:"-"`
	LastModified time.Time   `json:"-"`
	ExpiresAt    time.Time   `json:"expires_at,omitzero"` // zero: never
	Version      string      `json:"version,omitempty"`
	header       http.Header // a cached value's response headers, formatted once (valueHeader)
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
	s3        s3API
	bucket    string
	timeout   time.Duration
	now       func() time.Time
	cache     *cache // nil: off
	versioned bool   // set by Setup, before kv serves
}

func newStore(client s3API, bucket string, timeout time.Duration, c *cache) *Store {
	return &Store{s3: client, bucket: bucket, timeout: timeout, now: time.Now, cache: c}
}

func (s *Store) expired(m Meta) bool { return !m.ExpiresAt.IsZero() && !s.now().Before(m.ExpiresAt) }

// Setup checks the bucket (creating it when create is set), enables versioning when asked, and notes whether
// the bucket keeps versions.
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
	s.versioned = out.Status == types.BucketVersioningStatusEnabled
	if versioning && !s.versioned {
		return fmt.Errorf("versioning is %q after enabling it", out.Status)
	}
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
func (s *Store) Put(ctx context.Context, key string, body io.Reader, size int64, o PutOptions) (m Meta, err error) {
	s.cache.writing(key, 1, nil)
	defer func() { s.cache.writing(key, -1, err) }()
	in := &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)), ContentLength: &size,
		ContentType: &o.ContentType}
	in.IfMatch, in.IfNoneMatch, err = s.precondition(ctx, key, o.IfMatch, o.IfNoneMatch)
	if err != nil {
		return Meta{}, err
	}
	m = Meta{Size: size, ContentType: o.ContentType}
	if o.TTL > 0 {
		// The index entry goes first: a crash in between leaves a stale entry, never a value nothing reclaims.
		m.ExpiresAt = s.now().Add(o.TTL).UTC()
		in.Metadata = map[string]string{expiresMeta: m.ExpiresAt.Format(time.RFC3339Nano)}
		if err := s.putIndex(ctx, key, m.ExpiresAt); err != nil {
			return Meta{}, err
		}
	}
	uploadCtx, cancel := context.WithCancel(ctx)
	idle := &idleReader{r: body, t: time.AfterFunc(s.timeout, cancel), d: s.timeout, cancel: cancel}
	defer idle.Close()
	in.Body = idle
	out, err := s.s3.PutObject(uploadCtx, in)
	if err != nil {
		return Meta{}, goneSinceHead(fail("put", err), in.IfMatch)
	}
	m.ETag, m.Version = aws.ToString(out.ETag), aws.ToString(out.VersionId)
	// A sweep that looked for the value before this slow upload landed may have dropped its entry (sweeps
	// take entries a second early; one more second allows for clocks). The sweep looks again after dropping
	// an entry, and this puts it again after landing: one of the two sees the other.
	if o.TTL > 0 && !s.now().Before(time.Unix(dueSecond(m.ExpiresAt)-2, 0)) {
		err = s.putIndex(ctx, key, m.ExpiresAt)
	}
	return m, err
}

func (s *Store) putIndex(ctx context.Context, key string, expiresAt time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: aws.String(indexKey(key, expiresAt)),
		ContentLength: aws.Int64(0), Body: strings.NewReader("")})
	return fail("put index", err)
}

// precondition judges If-Match (an ETag list, or *) or If-None-Match: * against the live value, and returns
// the conditions that hold S3 to exactly what it saw: the ETag the object must still have, or none at all.
// An expired value that is not swept yet counts as absent, and is reclaimed first.
func (s *Store) precondition(ctx context.Context, key, ifMatch string, ifNoneMatch bool) (match, none *string,
	err error) {
	if ifMatch == "" && !ifNoneMatch {
		return nil, nil, nil
	}
	cur, err := s.Head(ctx, key, "")
	switch {
	case errors.Is(err, ErrNotFound) && ifMatch != "":
		return nil, nil, ErrPrecondition
	case errors.Is(err, ErrNotFound) && cur.ETag != "":
		_, err = s.reclaim(ctx, key, cur)
		return nil, aws.String("*"), err
	case errors.Is(err, ErrNotFound):
		return nil, aws.String("*"), nil
	case err != nil:
		return nil, nil, err
	case ifNoneMatch || !etagMatch(ifMatch, cur.ETag, false):
		return nil, nil, ErrPrecondition
	}
	return &cur.ETag, nil, nil
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
	value := make([]byte, m.Size)
	_, err = io.ReadFull(body, value)
	body.Close()
	if err != nil {
		return nil, Meta{}, fmt.Errorf("s3 get: reading the value: %w", err)
	}
	m.header = valueHeader(m)
	s.cache.fill(&cacheEntry{key: key, value: value, meta: m, stored: s.now()}, gen)
	return io.NopCloser(bytes.NewReader(value)), m, nil
}

func (s *Store) getObject(ctx context.Context, key, version string) (io.ReadCloser, Meta, error) {
	ctx, cancel := context.WithCancel(ctx)
	idle := &idleReader{t: time.AfterFunc(s.timeout, cancel), d: s.timeout, cancel: cancel, download: true}
	out, err := s.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)),
		VersionId: nonEmpty(version)})
	if err != nil {
		idle.Close()
		return nil, Meta{}, failObject("get", version, err)
	}
	idle.t.Stop() // until the first Read: from here the timer counts only S3's time
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
	hctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.s3.HeadObject(hctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(valueName(key)),
		VersionId: nonEmpty(version)})
	err = failObject("head", version, err)
	switch {
	case errors.Is(err, ErrNotFound):
		return Meta{}, cmp.Or(s.Ready(ctx), err)
	case err != nil:
		return Meta{}, err
	}
	m := meta(out.ContentLength, out.ETag, out.ContentType, out.LastModified, out.Metadata, out.VersionId)
	if s.expired(m) {
		return m, ErrNotFound
	}
	return m, nil
}

// Delete removes key, or with a version that one version (or delete marker) for good. It is idempotent: S3
// deletes whether or not there was anything, so whether this call removed a value is unknowable. With
// ifMatch it deletes only a live value whose ETag the list names, else ErrPrecondition; S3 is asked to hold
// to that ETag too (MinIO ignores it: a write landing between the HEAD and the delete can be deleted).
func (s *Store) Delete(ctx context.Context, key, version, ifMatch string) (err error) {
	s.cache.writing(key, 1, nil)
	defer func() { s.cache.writing(key, -1, err) }()
	etag, _, err := s.precondition(ctx, key, ifMatch, false)
	if err != nil {
		return err
	}
	_, err = s.deleteObject(ctx, valueName(key), version, aws.ToString(etag))
	if err != nil || version == "" {
		return goneSinceHead(err, etag)
	}
	return s.reindex(ctx, key) // the version now current may have lost its entry while it lay buried
}

// reindex puts back the index entry of key's value, if it has an expiry: a value can surface without one (a
// version below one deleted by id, or an upload that a sweep looked for before it landed).
func (s *Store) reindex(ctx context.Context, key string) error {
	m, err := s.Head(ctx, key, "")
	switch {
	case err != nil && !errors.Is(err, ErrNotFound):
		return err
	case m.ExpiresAt.IsZero():
		return nil
	}
	return s.putIndex(ctx, key, m.ExpiresAt)
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
// passed expired values or other objects; next is the cursor of the following page, empty on the last.
func (s *Store) List(ctx context.Context, prefix, after string, limit int) (keys []string, next string, err error) {
	out, err := s.list(ctx, &s3.ListObjectsV2Input{Bucket: &s.bucket, MaxKeys: aws.Int32(int32(limit + 1)),
		Prefix: aws.String(valuePrefix + objectPath(prefix, true)), StartAfter: aws.String(valuePrefix + after)})
	if err != nil {
		return nil, "", err
	}
	page := out.Contents[:min(limit, len(out.Contents))]
	for _, o := range page {
		key, ok := keyOf(strings.TrimPrefix(aws.ToString(o.Key), valuePrefix))
		if ok && strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
	}
	// One object more than the page proves that more follow: MinIO can answer IsTruncated=false with
	// objects still to come (seen with start-after and a small max-keys).
	if len(out.Contents) > limit || aws.ToBool(out.IsTruncated) && len(page) > 0 {
		next = strings.TrimPrefix(aws.ToString(page[len(page)-1].Key), valuePrefix)
	}
	keys, err = s.live(ctx, keys)
	return keys, next, err
}

// live drops the keys whose value has expired (or gone since the listing), HEADing them inFlight at a time.
func (s *Store) live(ctx context.Context, keys []string) ([]string, error) {
	errs := make([]error, len(keys))
	parallel(len(keys), func(i int) { _, errs[i] = s.Head(ctx, keys[i], "") })
	var live []string
	for i, err := range errs {
		switch {
		case err == nil:
			live = append(live, keys[i])
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
	}
	return live, nil
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

func (s *Store) list(ctx context.Context, in *s3.ListObjectsV2Input) (*s3.ListObjectsV2Output, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.s3.ListObjectsV2(ctx, in)
	return out, fail("list", err)
}

// Sweep reclaims expired values. It reads the index a page at a time, up to the first entry not due, and
// sweeps each key with due entries, inFlight keys at a time, so its work and memory grow with a page, never
// with the bucket or the backlog. It returns how many values it deleted.
func (s *Store) Sweep(ctx context.Context) (deleted int, err error) {
	in := &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(indexPrefix), MaxKeys: aws.Int32(sweepPage)}
	for {
		out, lerr := s.list(ctx, in)
		if lerr != nil {
			return deleted, errors.Join(err, lerr)
		}
		keys, entries, more := dueEntries(out, s.now())
		swept := make([]bool, len(keys))
		errs := make([]error, len(keys))
		parallel(len(keys), func(i int) { swept[i], errs[i] = s.sweepKey(ctx, keys[i], entries[keys[i]]) })
		for _, ok := range swept {
			if ok {
				deleted++
			}
		}
		err = errors.Join(append(errs, err)...)
		if !more || ctx.Err() != nil {
			return deleted, err
		}
		in.StartAfter = out.Contents[len(out.Contents)-1].Key // what this page kept stays behind
	}
}

// dueEntries groups the due entries of a page of the index by key, and tells whether due entries may follow.
// Entries name the second after their expiry, so it takes them a second early: a value that expired earlier
// in this second goes now; the HEAD decides.
func dueEntries(out *s3.ListObjectsV2Output, now time.Time) (keys []string, entries map[string][]string, more bool) {
	entries = map[string][]string{}
	for _, o := range out.Contents {
		name := aws.ToString(o.Key)
		sec, path, _ := strings.Cut(strings.TrimPrefix(name, indexPrefix), "/")
		n, err := strconv.ParseInt(sec, 10, 64)
		key, ok := keyOf(path)
		if err != nil || !ok {
			continue
		}
		if n > now.Unix()+1 {
			return keys, entries, false
		}
		if entries[key] == nil {
			keys = append(keys, key)
		}
		entries[key] = append(entries[key], name)
	}
	return keys, entries, aws.ToBool(out.IsTruncated) && len(out.Contents) > 0
}

// sweepKey HEADs a key with due entries, deletes its value if it has expired, and then the entries done
// with: all but the entry of a live TTL value. A key without a value may be an upload that lands after the
// HEAD; once its entries are gone it is looked at again, and a value that landed gets its entry back (Put,
// after landing, puts it again too: one of the two sees the other). deleted tells whether a value went.
func (s *Store) sweepKey(ctx context.Context, key string, entries []string) (deleted bool, err error) {
	m, err := s.Head(ctx, key, "")
	absent := errors.Is(err, ErrNotFound) && m.ETag == ""
	switch {
	case absent:
		err = nil
	case errors.Is(err, ErrNotFound):
		deleted, err = s.reclaim(ctx, key, m)
	case err == nil && !m.ExpiresAt.IsZero():
		own := indexKey(key, m.ExpiresAt)
		entries = slices.DeleteFunc(entries, func(e string) bool { return e == own })
	}
	for _, e := range entries {
		if err == nil {
			_, err = s.deleteObject(ctx, e, "", "")
		}
	}
	if err == nil && absent {
		err = s.reindex(ctx, key)
	}
	return deleted, err
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
	// S3 returns versions and delete markers apart; the history is one list, newest (and latest) first.
	slices.SortStableFunc(vs, func(a, b Version) int {
		switch c := b.LastModified.Compare(a.LastModified); {
		case c != 0 || a.Latest == b.Latest:
			return c
		case a.Latest:
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

// failObject is fail for a call on one object. A HEAD's error has no body, so its 400 has no code either:
// there it means a bad key (or version). A malformed version id is InvalidArgument elsewhere, and a delete
// marker read by id is MethodNotAllowed.
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
// download counts the time a Read waits (S3 stalls); an upload counts the time between Reads (S3 stopped
// taking the body), since a Read there waits on the client, which has its own deadline.
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
		defer r.t.Stop()
	} else {
		r.t.Stop()
		defer r.t.Reset(r.d)
	}
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
// whose outcome is unknown (S3 gave no answer: it may still apply the write) keeps its key out of the cache
// until a later write to it ends with a known outcome.
type cache struct {
	mu                      sync.Mutex
	max, used               int64
	freshFor                time.Duration // 0: entries stay until evicted or dropped
	ll                      list.List     // front: most recently used
	items                   map[string]*list.Element
	seed                    maphash.Seed
	slots                   [4096]struct{ writes, gen int }
	unsure                  map[string]bool
	hits, misses, evictions int64
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
	return &cache{max: maxBytes, freshFor: freshFor, items: map[string]*list.Element{}, seed: maphash.MakeSeed(),
		unsure: map[string]bool{}}
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
	if slot.gen != gen || slot.writes != 0 || c.unsure[e.key] {
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
	switch {
	case delta > 0:
	case err != nil && errorCode(err) == "" && !errors.Is(err, ErrPrecondition):
		c.unsure[key] = true
	default:
		delete(c.unsure, key)
	}
}

func (c *cache) remove(el *list.Element) {
	e := c.ll.Remove(el).(*cacheEntry)
	delete(c.items, e.key)
	c.used -= entrySize(e)
}

func entrySize(e *cacheEntry) int64 { return int64(len(e.key) + len(e.value)) }
