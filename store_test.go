package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// fakeS3 is an in-memory S3 bucket with the semantics the store relies on: conditional PutObject, If-Match on
// deletes (as AWS honours it), typed not-found errors, sorted paginated listing, versioning, and MinIO's
// answers for a missing bucket (a bare 404 on HEAD, NoSuchBucket elsewhere).
type fakeS3 struct {
	mu        sync.Mutex
	objects   map[string]fakeObject   // the current version of each object
	history   map[string][]fakeObject // with versioning: every version and delete marker, oldest first
	versioned bool
	seq       int
	bucket    bool
	calls     map[string]int
	maxList   int // the most objects one LIST asked for
	maxBatch  int // the most objects one DeleteObjects named
	// before runs (unlocked) at the start of each call, to inject failures or races; after runs once a call
	// has done its work, before it returns.
	before func(op, key string) error
	after  func(op, key string)
}

type fakeObject struct {
	body        []byte
	etag, ctype string
	meta        map[string]string
	modified    time.Time
	version     string
	marker      bool // a delete marker
}

var _ s3API = (*fakeS3)(nil)

func newFakeS3() *fakeS3 {
	return &fakeS3{objects: map[string]fakeObject{}, history: map[string][]fakeObject{}, bucket: true, calls: map[string]int{}}
}

// apiError is an S3 error as the SDK returns it: a code and a message.
type apiError struct{ code string }

func (e apiError) Error() string     { return "api error " + e.code }
func (e apiError) ErrorCode() string { return e.code }

// enter counts a call, runs before, and fails it as S3 would when the bucket is gone (a HEAD's 404 has no code).
func (f *fakeS3) enter(op, key string) error {
	f.mu.Lock()
	f.calls[op]++
	before, bucket := f.before, f.bucket
	f.mu.Unlock()
	if before != nil {
		if err := before(op, key); err != nil {
			return err
		}
	}
	switch {
	case bucket || op == "CreateBucket":
		return nil
	case op == "HeadObject" || op == "HeadBucket":
		return apiError{"NotFound"}
	}
	return apiError{"NoSuchBucket"}
}

func (f *fakeS3) leave(op, key string) {
	f.mu.Lock()
	after := f.after
	f.mu.Unlock()
	if after != nil {
		after(op, key)
	}
}

// hooks sets before and after (either may be nil).
func (f *fakeS3) hooks(before func(op, key string) error, after func(op, key string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.before, f.after = before, after
}

func (f *fakeS3) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// stamp gives a new version its id and a strictly later time (locked).
func (f *fakeS3) stamp(o *fakeObject) {
	f.seq++
	o.modified = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(f.seq) * time.Millisecond)
	if f.versioned {
		o.version = fmt.Sprintf("v%04d", f.seq)
	}
}

// version finds key's version id as MinIO answers: a malformed id is InvalidArgument (a bare 400 for HEAD), an
// unknown one NoSuchVersion (NotFound for HEAD), a delete marker MethodNotAllowed (locked).
func (f *fakeS3) version(key, id string, head bool) (fakeObject, error) {
	if _, err := fmt.Sscanf(id, "v%d", new(int)); err != nil {
		return fakeObject{}, apiError{cmp.Or(map[bool]string{true: "BadRequest"}[head], "InvalidArgument")}
	}
	for _, o := range f.history[key] {
		switch {
		case o.version != id:
		case o.marker:
			return o, apiError{"MethodNotAllowed"}
		default:
			return o, nil
		}
	}
	return fakeObject{}, apiError{cmp.Or(map[bool]string{true: "NotFound"}[head], "NoSuchVersion")}
}

func (f *fakeS3) PutObject(ctx context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	if err := f.enter("PutObject", *in.Key); err != nil {
		return nil, err
	}
	body, err := io.ReadAll(in.Body)
	if err != nil {
		return nil, err
	}
	if in.ContentLength != nil && int64(len(body)) != *in.ContentLength {
		return nil, fmt.Errorf("fake: body has %d bytes, ContentLength says %d", len(body), *in.ContentLength)
	}
	f.mu.Lock()
	cur, exists := f.objects[*in.Key]
	switch {
	case in.IfNoneMatch != nil && exists, in.IfMatch != nil && exists && *in.IfMatch != cur.etag:
		f.mu.Unlock()
		return nil, apiError{"PreconditionFailed"}
	case in.IfMatch != nil && !exists:
		f.mu.Unlock()
		return nil, &types.NoSuchKey{}
	}
	sum := md5.Sum(body)
	o := fakeObject{body: body, etag: `"` + hex.EncodeToString(sum[:]) + `"`, ctype: aws.ToString(in.ContentType), meta: in.Metadata}
	f.stamp(&o)
	f.objects[*in.Key] = o
	if f.versioned {
		f.history[*in.Key] = append(f.history[*in.Key], o)
	}
	f.mu.Unlock()
	f.leave("PutObject", *in.Key)
	return &s3.PutObjectOutput{ETag: &o.etag, VersionId: nonEmpty(o.version)}, nil
}

func (f *fakeS3) object(op, key string, version *string) (fakeObject, error) {
	if err := f.enter(op, key); err != nil {
		return fakeObject{}, err
	}
	defer f.leave(op, key)
	f.mu.Lock()
	defer f.mu.Unlock()
	if version != nil {
		return f.version(key, *version, op == "HeadObject")
	}
	o, ok := f.objects[key]
	if !ok && op == "HeadObject" {
		return o, &types.NotFound{}
	} else if !ok {
		return o, &types.NoSuchKey{}
	}
	return o, nil
}

func (f *fakeS3) GetObject(ctx context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	o, err := f.object("GetObject", *in.Key, in.VersionId)
	if err != nil {
		return nil, err
	}
	return &s3.GetObjectOutput{Body: io.NopCloser(bytes.NewReader(o.body)), ContentLength: aws.Int64(int64(len(o.body))),
		ETag: &o.etag, ContentType: &o.ctype, LastModified: &o.modified, Metadata: o.meta, VersionId: nonEmpty(o.version)}, nil
}

func (f *fakeS3) HeadObject(ctx context.Context, in *s3.HeadObjectInput, _ ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	o, err := f.object("HeadObject", *in.Key, in.VersionId)
	if err != nil {
		return nil, err
	}
	return &s3.HeadObjectOutput{ContentLength: aws.Int64(int64(len(o.body))), ETag: &o.etag, ContentType: &o.ctype,
		LastModified: &o.modified, Metadata: o.meta, VersionId: nonEmpty(o.version)}, nil
}

// remove deletes one object, as DeleteObject and each object of DeleteObjects do (locked).
func (f *fakeS3) remove(key string, ifMatch, version *string) error {
	o, ok := f.objects[key]
	switch {
	case ifMatch != nil && !ok:
		return apiError{"NoSuchKey"}
	case ifMatch != nil && *ifMatch != o.etag:
		return apiError{"PreconditionFailed"}
	case version != nil: // for good; S3 does not mind an unknown version
		if _, err := f.version(key, *version, false); errorCode(err) == "InvalidArgument" {
			return err
		}
		h := slices.DeleteFunc(f.history[key], func(o fakeObject) bool { return o.version == *version })
		if f.history[key] = h; len(h) > 0 && !h[len(h)-1].marker {
			f.objects[key] = h[len(h)-1]
		} else {
			delete(f.objects, key)
		}
		return nil
	}
	delete(f.objects, key)
	if f.versioned {
		m := fakeObject{marker: true}
		f.stamp(&m)
		f.history[key] = append(f.history[key], m)
	}
	return nil
}

func (f *fakeS3) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, _ ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	if err := f.enter("DeleteObject", *in.Key); err != nil {
		return nil, err
	}
	f.mu.Lock()
	err := f.remove(*in.Key, in.IfMatch, in.VersionId)
	f.mu.Unlock()
	f.leave("DeleteObject", *in.Key)
	if err != nil {
		return nil, err
	}
	return &s3.DeleteObjectOutput{}, nil
}

func (f *fakeS3) DeleteObjects(ctx context.Context, in *s3.DeleteObjectsInput, _ ...func(*s3.Options)) (*s3.DeleteObjectsOutput, error) {
	if err := f.enter("DeleteObjects", ""); err != nil {
		return nil, err
	}
	if n := len(in.Delete.Objects); n > 1000 {
		return nil, apiError{"MalformedXML"}
	}
	out := &s3.DeleteObjectsOutput{}
	f.mu.Lock()
	f.maxBatch = max(f.maxBatch, len(in.Delete.Objects))
	for _, o := range in.Delete.Objects {
		if err := f.remove(*o.Key, o.ETag, o.VersionId); err != nil {
			out.Errors = append(out.Errors, types.Error{Key: o.Key, Code: aws.String(errorCode(err))})
		}
	}
	f.mu.Unlock()
	f.leave("DeleteObjects", "")
	return out, nil
}

func (f *fakeS3) PutBucketVersioning(ctx context.Context, in *s3.PutBucketVersioningInput, _ ...func(*s3.Options)) (*s3.PutBucketVersioningOutput, error) {
	if err := f.enter("PutBucketVersioning", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.versioned = in.VersioningConfiguration.Status == types.BucketVersioningStatusEnabled
	return &s3.PutBucketVersioningOutput{}, nil
}

func (f *fakeS3) GetBucketVersioning(ctx context.Context, in *s3.GetBucketVersioningInput, _ ...func(*s3.Options)) (*s3.GetBucketVersioningOutput, error) {
	if err := f.enter("GetBucketVersioning", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.versioned {
		return &s3.GetBucketVersioningOutput{Status: types.BucketVersioningStatusEnabled}, nil
	}
	return &s3.GetBucketVersioningOutput{}, nil
}

// ListObjectVersions lists keys in order, each key's versions newest first, resuming after the markers.
func (f *fakeS3) ListObjectVersions(ctx context.Context, in *s3.ListObjectVersionsInput, _ ...func(*s3.Options)) (*s3.ListObjectVersionsOutput, error) {
	if err := f.enter("ListObjectVersions", aws.ToString(in.Prefix)); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.history {
		if strings.HasPrefix(k, aws.ToString(in.Prefix)) && k >= aws.ToString(in.KeyMarker) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := &s3.ListObjectVersionsOutput{}
	skipping, n := in.VersionIdMarker != nil, 0
	for _, k := range keys {
		h := f.history[k]
		for i := len(h) - 1; i >= 0; i-- {
			o := h[i]
			if skipping && k == aws.ToString(in.KeyMarker) {
				skipping = o.version != *in.VersionIdMarker
				continue
			}
			if n == int(aws.ToInt32(in.MaxKeys)) {
				out.IsTruncated = aws.Bool(true)
				return out, nil
			}
			n++
			latest := aws.Bool(i == len(h)-1)
			if o.marker {
				out.DeleteMarkers = append(out.DeleteMarkers, types.DeleteMarkerEntry{Key: aws.String(k),
					VersionId: aws.String(o.version), IsLatest: latest, LastModified: aws.Time(o.modified)})
			} else {
				out.Versions = append(out.Versions, types.ObjectVersion{Key: aws.String(k), VersionId: aws.String(o.version),
					IsLatest: latest, LastModified: aws.Time(o.modified), ETag: aws.String(o.etag), Size: aws.Int64(int64(len(o.body)))})
			}
		}
	}
	return out, nil
}

func (f *fakeS3) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, _ ...func(*s3.Options)) (*s3.ListObjectsV2Output, error) {
	if err := f.enter("ListObjectsV2", aws.ToString(in.Prefix)); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	after := max(aws.ToString(in.StartAfter), aws.ToString(in.ContinuationToken))
	var names []string
	for k := range f.objects {
		if strings.HasPrefix(k, aws.ToString(in.Prefix)) && k > after {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	limit := cmp.Or(int(aws.ToInt32(in.MaxKeys)), 1000)
	f.maxList = max(f.maxList, limit)
	out := &s3.ListObjectsV2Output{IsTruncated: aws.Bool(len(names) > limit)}
	names = names[:min(limit, len(names))]
	for _, k := range names {
		out.Contents = append(out.Contents, types.Object{Key: aws.String(k)})
	}
	if aws.ToBool(out.IsTruncated) {
		out.NextContinuationToken = aws.String(names[len(names)-1])
	}
	return out, nil
}

func (f *fakeS3) HeadBucket(ctx context.Context, in *s3.HeadBucketInput, _ ...func(*s3.Options)) (*s3.HeadBucketOutput, error) {
	if err := f.enter("HeadBucket", ""); err != nil {
		return nil, err
	}
	return &s3.HeadBucketOutput{}, nil
}

func (f *fakeS3) CreateBucket(ctx context.Context, in *s3.CreateBucketInput, _ ...func(*s3.Options)) (*s3.CreateBucketOutput, error) {
	if err := f.enter("CreateBucket", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bucket = true
	return &s3.CreateBucketOutput{}, nil
}

// clock is a settable time source for TTL tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

// newFakeStore is a ready store on a fake bucket, with a settable clock and no cache.
func newFakeStore(t testing.TB) (*Store, *fakeS3, *clock) {
	t.Helper()
	f := newFakeS3()
	st := newStore(f, "test", time.Second, nil)
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)}
	st.now = c.now
	if err := st.Setup(context.Background(), false, false); err != nil {
		t.Fatal(err)
	}
	return st, f, c
}

// keyPrefix gives each test its own key space, so tests can share a real bucket.
func keyPrefix(t *testing.T) string {
	return fmt.Sprintf("test-%s-%x/", strings.ReplaceAll(t.Name(), "/", "_"), rand.Uint32())
}

func put(t *testing.T, st *Store, key, value string, o PutOptions) Meta {
	t.Helper()
	m, err := st.Put(context.Background(), key, strings.NewReader(value), int64(len(value)), o)
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return m
}

func get(t *testing.T, st *Store, key string) (string, error) {
	t.Helper()
	body, _, err := st.Get(context.Background(), key, "")
	if err != nil {
		return "", err
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	return string(b), err
}

// indexEntries returns the TTL index entries in the fake bucket.
func indexEntries(f *fakeS3) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for name := range f.objects {
		if strings.HasPrefix(name, indexPrefix) {
			names = append(names, name)
		}
	}
	return names
}

func TestObjectPath(t *testing.T) {
	tests := []struct{ key, want string }{
		{"a", "a!"},
		{"a/b", "a/b!"},
		{"!", "!!!"},
		{"!x/y!/!!", "!!x/y!!/!!!!!"},
		{"ünï/cödé", "ünï/cödé!"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if got := objectPath(tt.key, false); got != tt.want {
				t.Errorf("objectPath(%q): got %q, want %q", tt.key, got, tt.want)
			}
			if got, ok := keyOf(tt.want); !ok || got != tt.key {
				t.Errorf("keyOf(%q): got %q, %v, want %q", tt.want, got, ok, tt.key)
			}
		})
	}
	// No key's object may be a folder of another's: MinIO could not list both.
	keys := []string{"a", "a/b", "!", "a/!", "a/!!", "!/!", "a/b/!", "a!", "a!/b", "a!!/b", "a!!"}
	for _, k1 := range keys {
		for _, k2 := range keys {
			if strings.HasPrefix(objectPath(k2, false), objectPath(k1, false)+"/") {
				t.Errorf("object of %q is a folder of the object of %q", k1, k2)
			}
		}
	}
	for _, path := range []string{"elsewhere", "a!!", "a!b!", ""} {
		if k, ok := keyOf(path); ok {
			t.Errorf("keyOf(%q) = %q: accepted an object name kv did not make", path, k)
		}
	}
}

// TestErrorsKeepTheirCause: the sentinel decides the status, the S3 error stays for the log, the operation is
// named, the key never is, and a bare 400 means a bad key only for a key's own HEAD.
func TestErrorsKeepTheirCause(t *testing.T) {
	tests := []struct {
		code, version string
		want          error
	}{
		{"NoSuchKey", "", ErrNotFound},
		{"NotFound", "", ErrNotFound},
		{"NoSuchVersion", "v1", ErrNotFound},
		{"MethodNotAllowed", "v1", ErrNotFound},
		{"PreconditionFailed", "", ErrPrecondition},
		{"ConditionalRequestConflict", "", ErrPrecondition},
		{"KeyTooLongError", "", ErrBadKey},
		{"XMinioInvalidObjectName", "", ErrBadKey},
		{"BadRequest", "", ErrBadKey},
		{"BadRequest", "v1", ErrBadVersion},
		{"InvalidArgument", "v1", ErrBadVersion},
		{"NoSuchBucket", "", ErrNoBucket},
	}
	for _, tt := range tests {
		t.Run(tt.code+"/"+tt.version, func(t *testing.T) {
			cause := fmt.Errorf("operation error S3: HeadObject: %w", apiError{tt.code})
			got := failObject("head", tt.version, cause)
			if !errors.Is(got, tt.want) || !errors.Is(got, cause) || !strings.HasPrefix(got.Error(), "s3 head: ") {
				t.Errorf("got %v, want %v wrapping the S3 error, naming the operation", got, tt.want)
			}
		})
	}
	if got := fail("head bucket", apiError{"BadRequest"}); errors.Is(got, ErrBadKey) || errors.Is(got, ErrNotFound) {
		t.Errorf("a HeadBucket 400: got %v, want no key sentinel (a wrong region looks like that)", got)
	}
	if fail("get", nil) != nil || failObject("get", "", nil) != nil {
		t.Error("fail(nil) is not nil")
	}
	st, f, _ := newFakeStore(t)
	f.hooks(func(op, key string) error { return fmt.Errorf("dial tcp: connection refused") }, nil)
	_, _, err := st.Get(context.Background(), "private-customer-key", "")
	if err == nil || strings.Contains(err.Error(), "private-customer-key") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("a failed GET: got %v, want the cause without the key", err)
	}
	st.ready.Store(false)
	f.hooks(func(op, key string) error { return apiError{"BadRequest"} }, nil)
	if err := st.Setup(context.Background(), true, false); err == nil || errors.Is(err, ErrBadKey) ||
		!strings.Contains(err.Error(), "BadRequest") || st.ready.Load() {
		t.Errorf("setup on a HeadBucket 400: got %v, want the S3 error, not a key error, and not ready", err)
	}
}

// realStore is a ready store on the S3 the environment names, or nil (the test says why) when there is none.
// versioned: a bucket of its own ("-versioned") with versioning on.
func realStore(t *testing.T, versioned bool) *Store {
	t.Helper()
	if os.Getenv("S3_ENDPOINT") == "" && os.Getenv("CI") != "" {
		t.Fatal("CI is set but S3_ENDPOINT is not: the real-S3 half of this test must run there")
	}
	if os.Getenv("S3_ENDPOINT") == "" {
		t.Log("S3_ENDPOINT is unset: the real-S3 half of this test is skipped (set S3_ENDPOINT, S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY)")
		return nil
	}
	bucket := cmp.Or(os.Getenv("S3_BUCKET"), "kv-test")
	if versioned {
		bucket += "-versioned"
	}
	cfg, err := loadConfig(func(k string) string { return cmp.Or(map[string]string{"S3_BUCKET": bucket}[k], os.Getenv(k)) })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	client, err := newS3Client(context.Background(), cfg, &metrics{})
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(client, cfg.Bucket, cfg.S3Timeout, nil)
	if err := st.Setup(context.Background(), true, versioned); err != nil {
		t.Fatalf("bucket %q on %s: %v", cfg.Bucket, cfg.S3Endpoint, err)
	}
	return st
}

// TestStoreAcceptance runs on the fake and, when S3_ENDPOINT is set, on a real S3, so the fake cannot drift.
func TestStoreAcceptance(t *testing.T) {
	fake, _, _ := newFakeStore(t)
	fake.now = time.Now
	impls := map[string]*Store{"fake": fake}
	if st := realStore(t, false); st != nil {
		impls["s3"] = st
	}
	for name, st := range impls {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := keyPrefix(t)
			if _, err := get(t, st, p+"missing"); !errors.Is(err, ErrNotFound) {
				t.Errorf("get missing: got %v, want ErrNotFound", err)
			}
			if _, err := st.Head(ctx, p+"missing", ""); !errors.Is(err, ErrNotFound) {
				t.Errorf("head missing: got %v, want ErrNotFound", err)
			}
			if err := st.Delete(ctx, p+"missing", ""); err != nil {
				t.Errorf("delete missing: got %v, want nil (idempotent)", err)
			}
			m := put(t, st, p+"a", "one", PutOptions{ContentType: "text/plain", IfNoneMatch: true})
			if _, err := st.Put(ctx, p+"a", strings.NewReader("two"), 3, PutOptions{IfNoneMatch: true}); !errors.Is(err, ErrPrecondition) {
				t.Errorf("If-None-Match on an existing key: got %v, want ErrPrecondition", err)
			}
			if _, err := st.Put(ctx, p+"a", strings.NewReader("two"), 3, PutOptions{IfMatch: `"0123"`}); !errors.Is(err, ErrPrecondition) {
				t.Errorf("wrong If-Match: got %v, want ErrPrecondition", err)
			}
			if _, err := st.Put(ctx, p+"a", strings.NewReader("two"), 3, PutOptions{IfMatch: "W/" + m.ETag}); !errors.Is(err, ErrPrecondition) {
				t.Errorf("weak If-Match: got %v, want ErrPrecondition (If-Match compares strongly)", err)
			}
			if _, err := st.Put(ctx, p+"none", strings.NewReader("two"), 3, PutOptions{IfMatch: m.ETag}); !errors.Is(err, ErrPrecondition) {
				t.Errorf("If-Match on a missing key: got %v, want ErrPrecondition", err)
			}
			m2 := put(t, st, p+"a", "two", PutOptions{IfMatch: m.ETag})
			if got, err := get(t, st, p+"a"); err != nil || got != "two" {
				t.Errorf("get after If-Match write: got %q, %v, want two", got, err)
			}
			if h, err := st.Head(ctx, p+"a", ""); err != nil || h.ETag != m2.ETag || h.Size != 3 {
				t.Errorf("head: got %+v, %v, want etag %s, size 3", h, err, m2.ETag)
			}
			for _, k := range []string{"a/b", "!x", "a-z", "b"} {
				put(t, st, p+k, "v", PutOptions{})
			}
			var all []string
			for cursor := ""; ; {
				keys, next, err := st.List(ctx, p, cursor, 2)
				if err != nil {
					t.Fatalf("list: %v", err)
				}
				if all = append(all, keys...); next == "" {
					break
				}
				cursor = next
			}
			want := []string{p + "!x", p + "a", p + "a-z", p + "a/b", p + "b"}
			if !slices.Equal(all, want) {
				t.Errorf("list pages: got %q, want %q", all, want)
			}
			if keys, _, _ := st.List(ctx, p+"a/", "", 10); !slices.Equal(keys, []string{p + "a/b"}) {
				t.Errorf("list prefix a/: got %q, want only %q", keys, p+"a/b")
			}
			for _, k := range want {
				if err := st.Delete(ctx, k, ""); err != nil {
					t.Errorf("delete %q: %v", k, err)
				}
			}
			if keys, _, _ := st.List(ctx, p, "", 10); len(keys) != 0 {
				t.Errorf("list after deletes: got %q, want none", keys)
			}
		})
	}
}

func TestTTLExpiresAtTheInstant(t *testing.T) {
	st, _, c := newFakeStore(t)
	ctx := context.Background()
	t0 := c.now()
	m := put(t, st, "k", "v", PutOptions{TTL: 10 * time.Second})
	if want := t0.Add(10 * time.Second); !m.ExpiresAt.Equal(want) {
		t.Fatalf("ExpiresAt: got %v, want %v", m.ExpiresAt, want)
	}
	c.set(m.ExpiresAt.Add(-time.Nanosecond))
	if got, err := get(t, st, "k"); err != nil || got != "v" {
		t.Errorf("1ns before expiry: got %q, %v, want v", got, err)
	}
	if h, err := st.Head(ctx, "k", ""); err != nil || !h.ExpiresAt.Equal(m.ExpiresAt) {
		t.Errorf("head 1ns before expiry: got %+v, %v", h, err)
	}
	if keys, _, _ := st.List(ctx, "", "", 10); !slices.Equal(keys, []string{"k"}) {
		t.Errorf("list 1ns before expiry: got %q, want [k]", keys)
	}
	c.set(m.ExpiresAt)
	if _, err := get(t, st, "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("at expiry: got %v, want ErrNotFound", err)
	}
	if _, err := st.Head(ctx, "k", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("head at expiry: got %v, want ErrNotFound", err)
	}
	if keys, _, _ := st.List(ctx, "", "", 10); len(keys) != 0 {
		t.Errorf("list at expiry: got %q, want none", keys)
	}
	if _, err := st.Put(ctx, "k", strings.NewReader("x"), 1, PutOptions{IfMatch: m.ETag}); !errors.Is(err, ErrPrecondition) {
		t.Errorf("If-Match on an expired value: got %v, want ErrPrecondition", err)
	}
	put(t, st, "k", "fresh", PutOptions{IfNoneMatch: true}) // an expired value counts as absent
	if got, err := get(t, st, "k"); err != nil || got != "fresh" {
		t.Errorf("after If-None-Match over an expired value: got %q, %v, want fresh", got, err)
	}
}

func TestTTLOverwrite(t *testing.T) {
	st, _, c := newFakeStore(t)
	put(t, st, "k", "v1", PutOptions{TTL: time.Second})
	put(t, st, "k", "v2", PutOptions{}) // no ttl: permanent again
	c.set(c.now().Add(time.Hour))
	if got, err := get(t, st, "k"); err != nil || got != "v2" {
		t.Errorf("overwrite without ttl: got %q, %v, want v2 for good", got, err)
	}
	put(t, st, "k", "v3", PutOptions{TTL: time.Second}) // ttl on a permanent key
	c.set(c.now().Add(time.Second))
	if _, err := get(t, st, "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ttl on a permanent key: got %v, want ErrNotFound after it", err)
	}
}

func TestSweep(t *testing.T) {
	st, f, c := newFakeStore(t)
	ctx := context.Background()
	put(t, st, "gone", "v", PutOptions{TTL: time.Second})
	put(t, st, "later", "v", PutOptions{TTL: time.Hour})
	put(t, st, "rewritten", "v", PutOptions{TTL: time.Second})
	put(t, st, "rewritten", "permanent", PutOptions{})
	put(t, st, "deleted", "v", PutOptions{TTL: time.Second})
	if err := st.Delete(ctx, "deleted", ""); err != nil {
		t.Fatal(err)
	}
	put(t, st, "forever", "v", PutOptions{})
	c.set(c.now().Add(2 * time.Second))
	if n, err := st.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: got %d, %v, want 1 deleted", n, err)
	}
	for key, want := range map[string]bool{"gone": false, "later": true, "rewritten": true, "forever": true} {
		if _, ok := f.objects[valueName(key)]; ok != want {
			t.Errorf("object of %q present: got %v, want %v", key, ok, want)
		}
	}
	if index := indexEntries(f); len(index) != 1 || !strings.HasSuffix(index[0], "/later!") {
		t.Errorf("index after sweep: got %q, want only the entry of later", index)
	}
	if n, err := st.Sweep(ctx); n != 0 || err != nil {
		t.Errorf("second sweep: got %d, %v, want nothing to do", n, err)
	}
}

func TestSweepTakesWhatExpiredThisSecond(t *testing.T) {
	st, f, c := newFakeStore(t)
	m := put(t, st, "k", "v", PutOptions{TTL: time.Second}) // expires at ...:06.0000006; its entry names :07
	c.set(m.ExpiresAt.Add(time.Millisecond))
	if n, err := st.Sweep(context.Background()); err != nil || n != 1 {
		t.Errorf("a sweep just after expiry: got %d, %v, want the value deleted now", n, err)
	}
	put(t, st, "live", "v", PutOptions{TTL: 1500 * time.Millisecond})
	c.set(c.now().Add(time.Second)) // its entry is due within the second ahead, but it has not expired
	if n, _ := st.Sweep(context.Background()); n != 0 {
		t.Errorf("a sweep before expiry deleted %d values", n)
	}
	if _, err := get(t, st, "live"); err != nil || len(indexEntries(f)) != 1 {
		t.Errorf("before expiry: got %v and %d index entries, want the value and its entry kept", err, len(indexEntries(f)))
	}
}

// TestSweepPagesInBatches: a backlog of 2,500 due keys is swept a page at a time with batch deletes, in bounded
// memory (no LIST or DeleteObjects over a page), leaving live and rewritten keys alone.
func TestSweepPagesInBatches(t *testing.T) {
	for _, versioned := range []bool{false, true} {
		t.Run(fmt.Sprint("versioned=", versioned), func(t *testing.T) {
			st, f, c := newFakeStore(t)
			f.versioned, st.versioned = versioned, versioned
			for i := range 2500 {
				put(t, st, fmt.Sprintf("due/%04d", i), "v", PutOptions{TTL: time.Second})
			}
			put(t, st, "due/0007", "rewritten for good", PutOptions{})
			put(t, st, "due/0008", "rewritten, later", PutOptions{TTL: time.Hour})
			put(t, st, "live", "v", PutOptions{TTL: time.Hour})
			put(t, st, "permanent", "v", PutOptions{})
			c.set(c.now().Add(3 * time.Second))
			heads := f.count("HeadObject")
			n, err := st.Sweep(context.Background())
			if err != nil || n != 2498 {
				t.Fatalf("sweep: got %d, %v, want 2498 deleted", n, err)
			}
			if got := f.count("HeadObject") - heads; got != 2500 {
				t.Errorf("HEADs: got %d, want one per due key (2500)", got)
			}
			if f.maxList > sweepPage || f.maxBatch > sweepPage || f.count("DeleteObject") != 0 {
				t.Errorf("largest LIST %d, largest batch %d, single deletes %d: want pages of at most %d, batches only",
					f.maxList, f.maxBatch, f.count("DeleteObject"), sweepPage)
			}
			for key, want := range map[string]string{"due/0007": "rewritten for good", "due/0008": "rewritten, later", "live": "v", "permanent": "v"} {
				if got, err := get(t, st, key); err != nil || got != want {
					t.Errorf("%s: got %q, %v, want %q", key, got, err, want)
				}
			}
			if _, err := get(t, st, "due/0009"); !errors.Is(err, ErrNotFound) {
				t.Errorf("an expired key: got %v, want ErrNotFound", err)
			}
			if index := indexEntries(f); len(index) != 2 {
				t.Errorf("index after the sweep: got %d entries, want 2 (live, due/0008)", len(index))
			}
			if f.mu.Lock(); versioned && len(f.history[valueName("due/0009")]) != 2 {
				t.Errorf("versioned history of an expired key: got %+v, want the value under a delete marker",
					f.history[valueName("due/0009")])
			}
			f.mu.Unlock()
		})
	}
}

// TestSweepRacingARewrite: a client rewrites the key between the sweeper's HEAD and its DELETE. Where S3
// honours the ETag condition the rewrite survives; where it does not (MinIO) the rewrite is deleted with the
// expired value, and the cache must not keep serving it.
func TestSweepRacingARewrite(t *testing.T) {
	for _, etagIgnored := range []bool{false, true} {
		t.Run(fmt.Sprintf("etag ignored %v", etagIgnored), func(t *testing.T) {
			st, f, c := newFakeStore(t)
			st.cache = newCache(1<<20, 0)
			put(t, st, "k", "old", PutOptions{TTL: time.Second})
			c.set(c.now().Add(2 * time.Second))
			f.hooks(func(op, key string) error {
				if op == "DeleteObjects" {
					f.hooks(nil, nil)
					put(t, st, "k", "new", PutOptions{})
					get(t, st, "k") // a GET between the rewrite and the delete: the cache holds "new"
					if etagIgnored {
						f.mu.Lock()
						defer f.mu.Unlock()
						delete(f.objects, valueName("k"))
					}
				}
				return nil
			}, nil)
			n, err := st.Sweep(context.Background())
			got, gerr := get(t, st, "k")
			switch {
			case etagIgnored && !errors.Is(gerr, ErrNotFound):
				t.Errorf("after the sweep deleted the rewrite: got %q, %v, want ErrNotFound (what S3 holds)", got, gerr)
			case etagIgnored:
			case err != nil || n != 0:
				t.Errorf("sweep: got %d, %v, want 0 deleted", n, err)
			case gerr != nil || got != "new":
				t.Errorf("after the race: got %q, %v, want the rewrite to survive", got, gerr)
			case len(indexEntries(f)) != 0:
				t.Errorf("index: got %q, want the stale entry dropped", indexEntries(f))
			}
		})
	}
}

func TestSweepKeepsEntriesItCouldNotFinish(t *testing.T) {
	st, f, c := newFakeStore(t)
	put(t, st, "k", "v", PutOptions{TTL: time.Second})
	c.set(c.now().Add(2 * time.Second))
	f.hooks(func(op, key string) error {
		if op == "HeadObject" {
			return errors.New("connection reset")
		}
		return nil
	}, nil)
	if _, err := st.Sweep(context.Background()); err == nil || len(indexEntries(f)) != 1 {
		t.Errorf("HEAD failing: got %v and %d entries, want an error and the entry kept", err, len(indexEntries(f)))
	}
	f.hooks(nil, nil)
	if n, err := st.Sweep(context.Background()); err != nil || n != 1 || len(indexEntries(f)) != 0 {
		t.Errorf("next sweep: got %d, %v, %d entries, want the value and its entry gone", n, err, len(indexEntries(f)))
	}
}

func TestSweepWorkGrowsWithDueEntriesOnly(t *testing.T) {
	st, f, c := newFakeStore(t)
	for i := range 50 {
		put(t, st, fmt.Sprintf("permanent-%d", i), "v", PutOptions{})
		put(t, st, fmt.Sprintf("later-%d", i), "v", PutOptions{TTL: time.Hour})
	}
	put(t, st, "due", "v", PutOptions{TTL: time.Second})
	c.set(c.now().Add(2 * time.Second))
	heads := f.count("HeadObject")
	if _, err := st.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.count("HeadObject") - heads; got != 1 {
		t.Errorf("sweep HEADs: got %d, want 1 (only the due key)", got)
	}
}

func TestSweepVersionedKeepsOlderVersionsBuried(t *testing.T) {
	st, f, c := newFakeStore(t)
	f.versioned, st.versioned = true, true
	old := put(t, st, "k", "permanent", PutOptions{})
	temp := put(t, st, "k", "brief", PutOptions{TTL: time.Second})
	c.set(c.now().Add(2 * time.Second))
	if n, err := st.Sweep(context.Background()); err != nil || n != 1 {
		t.Fatalf("sweep: got %d, %v", n, err)
	}
	if _, err := get(t, st, "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after the sweep: got %v, want ErrNotFound (the older version must not resurface)", err)
	}
	vs, _, _ := st.Versions(context.Background(), "k", "", 10)
	if len(vs) != 3 || !vs[0].Deleted || vs[1].Version != temp.Version || vs[2].Version != old.Version {
		t.Errorf("history: got %+v, want a delete marker over the expired and the older version", vs)
	}
	if _, _, err := st.Get(context.Background(), "k", temp.Version); !errors.Is(err, ErrNotFound) {
		t.Errorf("the expired version by id: got %v, want ErrNotFound", err)
	}
	if got, _, err := st.Get(context.Background(), "k", old.Version); err != nil {
		t.Errorf("the older version by id: got %v, %v, want it readable", got, err)
	}
}

// TestListReadsTheIndexByPage: with 2,500 expired keys waiting for the sweep, a page of ten reads no more of
// the index than ten entries, and still leaves every expired key out.
func TestListReadsTheIndexByPage(t *testing.T) {
	st, f, c := newFakeStore(t)
	for i := range 2500 {
		put(t, st, fmt.Sprintf("expired/%04d", i), "v", PutOptions{TTL: time.Second})
	}
	for i := range 20 {
		put(t, st, fmt.Sprintf("live/%02d", i), "v", PutOptions{})
	}
	put(t, st, "live/05", "v", PutOptions{TTL: time.Second}) // now expiring too
	c.set(c.now().Add(3 * time.Second))
	f.maxList = 0
	keys, next, err := st.List(context.Background(), "live/", "", 10)
	want := []string{"live/00", "live/01", "live/02", "live/03", "live/04", "live/06", "live/07", "live/08", "live/09", "live/10"}
	if err != nil || !slices.Equal(keys, want) || next == "" {
		t.Errorf("list: got %q, next %q, %v, want %q and a cursor", keys, next, err, want)
	}
	if f.maxList > 11 {
		t.Errorf("largest LIST: %d objects, want at most a page (11)", f.maxList)
	}
	if keys, _, _ := st.List(context.Background(), "expired/", "", 10); len(keys) != 0 {
		t.Errorf("expired keys listed: %q", keys)
	}
}

// TestListMovesPastForeignObjects: objects kv did not write never end a walk early or show up in it.
func TestListMovesPastForeignObjects(t *testing.T) {
	st, f, _ := newFakeStore(t)
	put(t, st, "a", "v", PutOptions{})
	put(t, st, "c", "v", PutOptions{})
	for _, name := range []string{"v/b", "v/b2", "v/bb!x", "v/z"} {
		f.objects[name] = fakeObject{}
	}
	for limit := 1; limit <= 3; limit++ {
		var all []string
		for cursor, pages := "", 0; pages < 10; pages++ {
			keys, next, err := st.List(context.Background(), "", cursor, limit)
			if err != nil {
				t.Fatal(err)
			}
			if all = append(all, keys...); next == "" {
				break
			}
			cursor = next
		}
		if !slices.Equal(all, []string{"a", "c"}) {
			t.Errorf("limit %d: walked %q, want [a c]", limit, all)
		}
	}
}

func TestDeleteIsIdempotent(t *testing.T) {
	st, f, _ := newFakeStore(t)
	ctx := context.Background()
	put(t, st, "k", "v", PutOptions{})
	for i := range 2 {
		if err := st.Delete(ctx, "k", ""); err != nil {
			t.Errorf("delete %d: got %v, want nil", i+1, err)
		}
	}
	if f.count("HeadObject") != 0 {
		t.Errorf("DELETE made %d HEADs, want none", f.count("HeadObject"))
	}
	f.versioned, st.versioned = true, true
	m := put(t, st, "k", "v", PutOptions{})
	for i := range 2 {
		if err := st.Delete(ctx, "k", m.Version); err != nil {
			t.Errorf("delete version %d: got %v, want nil", i+1, err)
		}
	}
	if err := st.Delete(ctx, "k", "nonsense"); !errors.Is(err, ErrBadVersion) {
		t.Errorf("delete of a malformed version: got %v, want ErrBadVersion", err)
	}
}

func TestIfMatchRacingADelete(t *testing.T) {
	st, f, _ := newFakeStore(t)
	m := put(t, st, "k", "v", PutOptions{})
	f.hooks(func(op, key string) error {
		if op == "PutObject" { // between kv's HEAD and its conditional PUT, another client deletes the key
			f.hooks(nil, nil)
			st.Delete(context.Background(), "k", "")
		}
		return nil
	}, nil)
	if _, err := st.Put(context.Background(), "k", strings.NewReader("x"), 1, PutOptions{IfMatch: m.ETag}); !errors.Is(err, ErrPrecondition) {
		t.Errorf("If-Match racing a delete: got %v, want ErrPrecondition", err)
	}
}

// TestMissingBucketIsAnOutage: a bucket removed behind kv is a storage failure, never a missing key.
func TestMissingBucketIsAnOutage(t *testing.T) {
	st, f, _ := newFakeStore(t)
	ctx := context.Background()
	m := put(t, st, "k", "v", PutOptions{})
	f.bucket = false
	for name, err := range map[string]error{
		"get":  func() error { _, _, err := st.Get(ctx, "k", ""); return err }(),
		"head": func() error { _, err := st.Head(ctx, "k", ""); return err }(),
		"put":  func() error { _, err := st.Put(ctx, "k", strings.NewReader("v"), 1, PutOptions{}); return err }(),
		"if-match": func() error {
			_, err := st.Put(ctx, "k", strings.NewReader("v"), 1, PutOptions{IfMatch: m.ETag})
			return err
		}(),
		"list":   func() error { _, _, err := st.List(ctx, "", "", 10); return err }(),
		"delete": st.Delete(ctx, "k", ""),
		"ready":  st.Ready(ctx),
	} {
		if !errors.Is(err, ErrNoBucket) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrPrecondition) {
			t.Errorf("%s: got %v, want ErrNoBucket only", name, err)
		}
	}
}

func entry(key, value string) *cacheEntry { return &cacheEntry{key: key, value: []byte(value)} }

func cachedKeys(c *cache) []string {
	var keys []string
	for el := c.ll.Front(); el != nil; el = el.Next() {
		keys = append(keys, el.Value.(*cacheEntry).key)
	}
	return keys
}

func TestCacheEvictsLeastRecentlyUsedByBytes(t *testing.T) {
	c := newCache(30, 0) // each entry below is 10 bytes: key 1 + value 9
	now := time.Now()
	for _, k := range []string{"a", "b", "c"} {
		c.add(entry(k, "123456789"))
	}
	if e, _ := c.get("a", now); e == nil { // a becomes the most recent
		t.Fatal("a is not cached")
	}
	c.add(entry("d", "123456789"))
	if got := cachedKeys(c); !slices.Equal(got, []string{"d", "a", "c"}) {
		t.Errorf("after evicting: got %q, want [d a c] (b was least recently used)", got)
	}
	if used, items := c.used, c.ll.Len(); used != 30 || items != 3 || c.evictions.Load() != 1 {
		t.Errorf("stats: got %d bytes, %d items, %d evictions, want 30, 3, 1", used, items, c.evictions.Load())
	}
	c.add(entry("e", strings.Repeat("x", 25))) // 26 bytes: room for nothing else
	if used, items := c.used, c.ll.Len(); used != 26 || items != 1 {
		t.Errorf("after a large entry: got %d bytes in %d items, want 26 in 1", used, items)
	}
	if newCache(0, 0) != nil {
		t.Error("CACHE_MAX_BYTES=0 did not turn the cache off")
	}
	big := newCache(64<<20, 0)
	if big.fits(cacheMaxItem+1) || !big.fits(cacheMaxItem) || c.fits(31) {
		t.Errorf("fits: values up to %d bytes (and the cache's size), and no larger, should be cached", cacheMaxItem)
	}
}

func TestCacheExpiryAndFreshness(t *testing.T) {
	now := time.Now()
	c := newCache(1<<20, time.Minute)
	e := entry("ttl", "v")
	e.meta.ExpiresAt, e.stored = now.Add(time.Second), now
	c.add(e)
	if got, _ := c.get("ttl", now.Add(time.Second-1)); got == nil {
		t.Error("1ns before expiry: not served")
	}
	if got, _ := c.get("ttl", now.Add(time.Second)); got != nil {
		t.Error("at expiry: served from the cache")
	}
	e = entry("fresh", "v")
	e.stored = now
	c.add(e)
	if got, _ := c.get("fresh", now.Add(time.Minute)); got != nil {
		t.Error("served past CACHE_TTL")
	}
}

func newCachedStore(t *testing.T) (*Store, *fakeS3) {
	t.Helper()
	st, f, _ := newFakeStore(t)
	st.cache = newCache(1<<20, 0)
	return st, f
}

func TestCacheHitsAndDrops(t *testing.T) {
	st, f := newCachedStore(t)
	ctx := context.Background()
	m := put(t, st, "k", "v1", PutOptions{})
	for range 3 {
		if got, err := get(t, st, "k"); err != nil || got != "v1" {
			t.Fatalf("GET: got %q, %v, want v1", got, err)
		}
	}
	if n := f.count("GetObject"); n != 1 {
		t.Errorf("S3 GETs for three reads: got %d, want 1 (then hits)", n)
	}
	if _, err := st.Put(ctx, "k", strings.NewReader("v2"), 2, PutOptions{IfMatch: `"stale"`}); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("conditional write: got %v", err)
	}
	put(t, st, "k", "v3", PutOptions{IfMatch: m.ETag})
	if got, _ := get(t, st, "k"); got != "v3" {
		t.Errorf("after overwrite: got %q, want v3", got)
	}
	if err := st.Delete(ctx, "k", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, st, "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after DELETE: got %v, want ErrNotFound", err)
	}
}

// TestCacheNeverOlderThanS3: once a write has answered, no GET returns a value older than what S3 holds, however
// the S3 calls of overlapping requests return. S3 does not promise that concurrent PUTs answer in the order
// they took effect; here the first request's S3 call is held, once it took effect, until the other has answered.
func TestCacheNeverOlderThanS3(t *testing.T) {
	tests := []struct {
		name         string
		held         string // the S3 call whose return is held
		first, other func(st *Store)
		want         string // "" for absent
	}{
		{"two PUTs", "PutObject", func(st *Store) { put(t, st, "k", "A", PutOptions{}) },
			func(st *Store) { put(t, st, "k", "B", PutOptions{}) }, "B"},
		{"PUT and DELETE", "PutObject", func(st *Store) { put(t, st, "k", "A", PutOptions{}) },
			func(st *Store) { st.Delete(context.Background(), "k", "") }, ""},
		{"a GET's fetch and a PUT", "GetObject", func(st *Store) { get(t, st, "k") },
			func(st *Store) { put(t, st, "k", "B", PutOptions{}) }, "B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, f := newCachedStore(t)
			put(t, st, "k", "old", PutOptions{})
			if tt.held != "GetObject" { // the cache holds the old value (a GET's fetch needs a miss)
				get(t, st, "k")
			}
			held, release := make(chan struct{}), make(chan struct{})
			var first atomic.Bool
			f.hooks(nil, func(op, key string) {
				if op == tt.held && key == valueName("k") && first.CompareAndSwap(false, true) {
					close(held)
					<-release
				}
			})
			done := make(chan struct{})
			go func() { defer close(done); tt.first(st) }()
			<-held
			tt.other(st)
			close(release)
			<-done
			got, err := get(t, st, "k")
			if want := tt.want; got != want || (want == "") != errors.Is(err, ErrNotFound) {
				t.Errorf("GET after both answered: got %q, %v, want %q (what S3 holds)", got, err, want)
			}
		})
	}
}

// TestCacheNoFillDuringAWrite: a GET that reads S3 while a write is under way must not fill the cache: the
// write may take effect before it answers, and a read that saw it must not be followed by one that did not.
func TestCacheNoFillDuringAWrite(t *testing.T) {
	st, f := newCachedStore(t)
	put(t, st, "k", "old", PutOptions{})
	begun, applied, proceed, finish := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	var before, after sync.Once
	f.hooks(func(op, key string) error {
		if op == "PutObject" {
			before.Do(func() { close(begun); <-proceed })
		}
		return nil
	}, func(op, key string) {
		if op == "PutObject" {
			after.Do(func() { close(applied); <-finish })
		}
	})
	done := make(chan struct{})
	go func() { defer close(done); put(t, st, "k", "new", PutOptions{}) }()
	<-begun
	if got, _ := get(t, st, "k"); got != "old" { // the write has not taken effect yet
		t.Fatalf("GET before the write took effect: got %q, want old", got)
	}
	close(proceed)
	<-applied // S3 holds the new value; the PUT has not answered
	if h, err := st.Head(context.Background(), "k", ""); err != nil || h.Size != 3 {
		t.Fatalf("HEAD: got %+v, %v, want the new value's", h, err)
	}
	if got, _ := get(t, st, "k"); got != "new" {
		t.Errorf("GET after a HEAD that saw the write: got %q, want new", got)
	}
	close(finish)
	<-done
}

func TestCacheRace(t *testing.T) {
	st, _ := newCachedStore(t)
	st.cache.max = 200
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key := fmt.Sprintf("k%d", (w*7+i)%13)
				switch i % 4 {
				case 0:
					put(t, st, key, strings.Repeat("v", i%50), PutOptions{})
				case 3:
					st.Delete(context.Background(), key, "")
				default:
					get(t, st, key)
				}
			}
		})
	}
	wg.Wait()
	used, items := st.cache.used, st.cache.ll.Len()
	var sum int64
	for el := st.cache.ll.Front(); el != nil; el = el.Next() {
		sum += entrySize(el.Value.(*cacheEntry))
	}
	writes := 0
	for _, slot := range st.cache.slots {
		writes += slot.writes
	}
	if used != sum || used > 200 || items != len(st.cache.items) || writes != 0 {
		t.Errorf("after concurrent use: %d bytes counted, %d held, %d items, %d in the map, %d writes left",
			used, sum, items, len(st.cache.items), writes)
	}
}

func TestVersionsAcceptance(t *testing.T) {
	fake, f, _ := newFakeStore(t)
	f.versioned, fake.versioned = true, true
	impls := map[string]*Store{"fake": fake}
	if st := realStore(t, true); st != nil {
		impls["s3"] = st
	}
	for name, st := range impls {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			k := keyPrefix(t) + "doc"
			put(t, st, k+"!longer", "another key", PutOptions{}) // shares the prefix of k's object name
			var written []Meta
			for _, v := range []string{"one", "two", "three"} {
				m := put(t, st, k, v, PutOptions{})
				if m.Version == "" {
					t.Fatalf("PUT %q: no version id", v)
				}
				written = append(written, m)
			}
			vs, next, err := st.Versions(ctx, k, "", 10)
			if err != nil || len(vs) != 3 || next != "" {
				t.Fatalf("versions: got %+v, next %q, %v, want 3 and no next", vs, next, err)
			}
			for i, v := range vs {
				if want := written[2-i]; v.Version != want.Version || v.ETag != want.ETag || v.Latest != (i == 0) || v.Deleted {
					t.Errorf("version %d: got %+v, want %s newest first, latest only first", i, v, want.Version)
				}
			}
			for i, v := range []string{"one", "two", "three"} {
				body, _, err := st.Get(ctx, k, written[i].Version)
				if err != nil {
					t.Fatalf("get version %d: %v", i, err)
				}
				got, _ := io.ReadAll(body)
				if body.Close(); string(got) != v {
					t.Errorf("version %d: got %q, want %q", i, got, v)
				}
			}
			page, next, err := st.Versions(ctx, k, "", 2)
			if err != nil || len(page) != 2 || next != page[1].Version {
				t.Fatalf("page 1: got %d, next %q, %v", len(page), next, err)
			}
			if page, next, _ = st.Versions(ctx, k, next, 2); len(page) != 1 || page[0].Version != written[0].Version || next != "" {
				t.Errorf("page 2: got %+v, next %q, want the oldest version and no next", page, next)
			}
			if err := st.Delete(ctx, k, ""); err != nil {
				t.Fatal(err)
			}
			if _, err := get(t, st, k); !errors.Is(err, ErrNotFound) {
				t.Errorf("after DELETE: got %v, want ErrNotFound", err)
			}
			vs, _, _ = st.Versions(ctx, k, "", 10)
			if len(vs) != 4 || !vs[0].Deleted || !vs[0].Latest {
				t.Fatalf("after DELETE: got %+v, want a delete marker on top of 3 versions", vs)
			}
			for range 2 { // idempotent
				if err := st.Delete(ctx, k, written[0].Version); err != nil {
					t.Fatalf("delete version: %v", err)
				}
			}
			if _, _, err := st.Get(ctx, k, written[0].Version); !errors.Is(err, ErrNotFound) {
				t.Errorf("deleted version: got %v, want ErrNotFound", err)
			}
			if _, _, err := st.Get(ctx, k, "abc"); !errors.Is(err, ErrBadVersion) {
				t.Errorf("malformed version: got %v, want ErrBadVersion", err)
			}
			if _, err := st.Head(ctx, k, "abc"); !errors.Is(err, ErrBadVersion) {
				t.Errorf("HEAD of a malformed version: got %v, want ErrBadVersion", err)
			}
			if _, err := st.Head(ctx, k, vs[0].Version); !errors.Is(err, ErrNotFound) {
				t.Errorf("HEAD of the delete marker by id: got %v, want ErrNotFound", err)
			}
			if err := st.Delete(ctx, k, vs[0].Version); err != nil { // removing the marker restores "three"
				t.Fatalf("deleting the delete marker: %v", err)
			}
			if got, err := get(t, st, k); err != nil || got != "three" {
				t.Errorf("after removing the marker: got %q, %v, want three", got, err)
			}
		})
	}
}

const testMaxValue = 1 << 10

// syncBuffer is a log sink that requests may write to concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type testServer struct {
	h        http.Handler
	st       *Store
	s3       *fakeS3
	log      *syncBuffer
	clock    *clock
	stopping *atomic.Bool
}

func testConfig() config {
	return config{MaxValueBytes: testMaxValue, ClientTimeout: 200 * time.Millisecond}
}

func newTestServer(t testing.TB, cfg config) *testServer {
	t.Helper()
	st, f, c := newFakeStore(t)
	ts := &testServer{st: st, s3: f, log: &syncBuffer{}, clock: c, stopping: &atomic.Bool{}}
	ts.h = newServer(slog.New(slog.NewJSONHandler(ts.log, nil)), st, &metrics{}, cfg, ts.stopping)
	return ts
}

func (ts *testServer) do(method, target, body string, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	if r.Header.Get("Transfer-Encoding") == "chunked" {
		r.ContentLength = -1
	}
	w := httptest.NewRecorder()
	ts.h.ServeHTTP(w, r)
	return w
}

// wantError checks a JSON error body that carries the request's ID.
func wantError(t *testing.T, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status: got %d, want %d (body %s)", w.Code, status, w.Body)
	}
	var e struct {
		Error     string
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Fatalf("error body: got %q, want JSON with error", w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type: got %q, want application/json", ct)
	}
	if id := w.Header().Get("X-Request-ID"); id == "" || e.RequestID != id {
		t.Errorf("request_id: got %q, header %q, want the same non-empty ID", e.RequestID, id)
	}
	if (status == 503) != (w.Header().Get("Retry-After") != "") {
		t.Errorf("status %d with Retry-After %q: want Retry-After exactly on 503", status, w.Header().Get("Retry-After"))
	}
}

func TestPutGetHeadDelete(t *testing.T) {
	ts := newTestServer(t, testConfig())
	w := ts.do("PUT", "/kv/dir/ünï%20k", "hello", "Content-Type", "text/plain")
	var got struct {
		Key  string
		Size int64
		ETag string
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != 200 || got.Key != "dir/ünï k" || got.Size != 5 {
		t.Fatalf("PUT: got %d %s, want 200, key \"dir/ünï k\", size 5", w.Code, w.Body)
	}
	if etag := w.Header().Get("ETag"); etag == "" || etag != got.ETag {
		t.Errorf("PUT ETag header %q, body etag %q: want the same", etag, got.ETag)
	}
	w = ts.do("GET", "/kv/dir/ünï%20k", "")
	if w.Code != 200 || w.Body.String() != "hello" {
		t.Errorf("GET: got %d %q, want 200 hello", w.Code, w.Body)
	}
	// (A short GET body's Content-Length is net/http's to write: tests/ checks it through the real server.)
	for h, want := range map[string]string{"Content-Type": "text/plain", "ETag": got.ETag, "Cache-Control": "no-cache"} {
		if v := w.Header().Get(h); v != want {
			t.Errorf("GET %s: got %q, want %q", h, v, want)
		}
	}
	if _, err := http.ParseTime(w.Header().Get("Last-Modified")); err != nil {
		t.Errorf("GET Last-Modified: %v", err)
	}
	for _, inm := range []string{got.ETag, "W/" + got.ETag, `"other", ` + got.ETag, "*"} {
		if w = ts.do("GET", "/kv/dir/ünï%20k", "", "If-None-Match", inm); w.Code != 304 || w.Body.Len() != 0 {
			t.Errorf("GET If-None-Match %s: got %d %q, want 304 and no body (weak comparison)", inm, w.Code, w.Body)
		}
	}
	gets := ts.s3.count("GetObject")
	if w = ts.do("HEAD", "/kv/dir/ünï%20k", ""); w.Code != 200 || w.Header().Get("Content-Length") != "5" || w.Body.Len() != 0 {
		t.Errorf("HEAD: got %d, length %q, body %q", w.Code, w.Header().Get("Content-Length"), w.Body)
	}
	if ts.s3.count("GetObject") != gets {
		t.Error("HEAD downloaded the value")
	}
	for i := range 2 { // idempotent: S3 cannot tell whether there was a value
		if w = ts.do("DELETE", "/kv/dir/ünï%20k", ""); w.Code != 204 {
			t.Errorf("DELETE %d: got %d, want 204", i+1, w.Code)
		}
	}
	wantError(t, ts.do("GET", "/kv/dir/ünï%20k", ""), 404)
	wantError(t, ts.do("HEAD", "/kv/dir/ünï%20k", ""), 404)
}

func TestEmptyValueAndDefaultType(t *testing.T) {
	ts := newTestServer(t, testConfig())
	if w := ts.do("PUT", "/kv/e", ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"size":0`) {
		t.Fatalf("PUT empty: got %d %s", w.Code, w.Body)
	}
	w := ts.do("GET", "/kv/e", "")
	if w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("Content-Type") != "application/octet-stream" {
		t.Errorf("GET empty: got %d %q type %q, want 200, empty, application/octet-stream", w.Code, w.Body, w.Header().Get("Content-Type"))
	}
}

func TestBadRequests(t *testing.T) {
	long := strings.Repeat("k", maxObjectKey)
	tests := []struct {
		name, method, target, body string
		header                     []string
		status                     int
	}{
		{"empty key", "PUT", "/kv/", "v", nil, 400},
		{"dot segment", "PUT", "/kv/a/../b", "v", nil, 400},
		{"single dot", "GET", "/kv/a/./b", "", nil, 400},
		{"encoded dots", "PUT", "/kv/%2e%2e/x", "v", nil, 400},
		{"double slash", "PUT", "/kv/a//b", "v", nil, 400},
		{"trailing slash", "PUT", "/kv/a/", "v", nil, 400},
		{"control character", "PUT", "/kv/a%00b", "v", nil, 400},
		{"invalid utf-8", "PUT", "/kv/a%ffb", "v", nil, 400},
		{"key too long", "PUT", "/kv/" + long, "v", nil, 400},
		{"ttl zero", "PUT", "/kv/k?ttl=0", "v", nil, 400},
		{"ttl negative", "PUT", "/kv/k?ttl=-5s", "v", nil, 400},
		{"ttl words", "PUT", "/kv/k?ttl=abc", "v", nil, 400},
		{"ttl too fine", "PUT", "/kv/k?ttl=1ms", "v", nil, 400},
		{"ttl overflow", "PUT", "/kv/k?ttl=99999999999999999999", "v", nil, 400},
		{"ttl empty", "PUT", "/kv/k?ttl=", "v", nil, 400},
		{"malformed query", "PUT", "/kv/k?ttl=%zz", "v", nil, 400},
		{"If-None-Match etag", "PUT", "/kv/k", "v", []string{"If-None-Match", `"abc"`}, 400},
		{"both preconditions", "PUT", "/kv/k", "v", []string{"If-None-Match", "*", "If-Match", `"abc"`}, 400},
		{"non-ASCII Content-Type", "PUT", "/kv/k", "v", []string{"Content-Type", "text/ünï"}, 400},
		{"too large", "PUT", "/kv/k", strings.Repeat("x", testMaxValue+1), nil, 413},
		{"chunked", "PUT", "/kv/k", "v", []string{"Transfer-Encoding", "chunked"}, 411},
		{"If-Match on absent", "PUT", "/kv/k", "v", []string{"If-Match", `"abc"`}, 412},
		{"versions unversioned", "GET", "/kv/k?versions", "", nil, 400},
		{"version unversioned", "GET", "/kv/k?version=v0001", "", nil, 400},
		{"delete version unversioned", "DELETE", "/kv/k?version=v0001", "", nil, 400},
		{"limit zero", "GET", "/kv?limit=0", "", nil, 400},
		{"limit too big", "GET", "/kv?limit=1001", "", nil, 400},
		{"limit words", "GET", "/kv?limit=ten", "", nil, 400},
		{"bad cursor", "GET", "/kv?cursor=!!", "", nil, 400},
		{"cursor not UTF-8", "GET", "/kv?cursor=_w", "", nil, 400},
		{"bad prefix", "GET", "/kv?prefix=a%00", "", nil, 400},
		{"no such endpoint", "GET", "/nope", "", nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, testConfig())
			wantError(t, ts.do(tt.method, tt.target, tt.body, tt.header...), tt.status)
			if n := ts.s3.count("PutObject") + ts.s3.count("DeleteObject"); n != 0 {
				t.Errorf("a rejected request made %d writes", n)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	tests := []struct{ method, target, allow string }{
		{"POST", "/kv/k", "GET, HEAD, PUT, DELETE"},
		{"PATCH", "/kv/k", "GET, HEAD, PUT, DELETE"},
		{"BREW", "/kv/k", "GET, HEAD, PUT, DELETE"},
		{"PUT", "/kv", "GET, HEAD"},
		{"DELETE", "/kv", "GET, HEAD"},
		{"POST", "/healthz", "GET, HEAD"},
		{"PUT", "/readyz", "GET, HEAD"},
		{"DELETE", "/metrics", "GET, HEAD"},
	}
	for _, tt := range tests {
		t.Run(tt.method+tt.target, func(t *testing.T) {
			w := newTestServer(t, testConfig()).do(tt.method, tt.target, "")
			wantError(t, w, 405)
			if got := w.Header().Get("Allow"); got != tt.allow {
				t.Errorf("Allow: got %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestSizeLimitBoundary(t *testing.T) {
	ts := newTestServer(t, testConfig())
	body := strings.Repeat("x", testMaxValue)
	if w := ts.do("PUT", "/kv/max", body); w.Code != 200 {
		t.Errorf("PUT of exactly the limit: got %d %s", w.Code, w.Body)
	}
	if w := ts.do("GET", "/kv/max", ""); w.Body.String() != body {
		t.Errorf("GET: got %d bytes, want %d", w.Body.Len(), len(body))
	}
}

func TestConditionalWrites(t *testing.T) {
	ts := newTestServer(t, testConfig())
	if w := ts.do("PUT", "/kv/c", "v1", "If-None-Match", "*"); w.Code != 200 {
		t.Fatalf("If-None-Match * on absent: got %d", w.Code)
	}
	wantError(t, ts.do("PUT", "/kv/c", "v2", "If-None-Match", "*"), 412)
	etag := ts.do("GET", "/kv/c", "").Header().Get("ETag")
	wantError(t, ts.do("PUT", "/kv/c", "v2", "If-Match", `"not-it"`), 412)
	wantError(t, ts.do("PUT", "/kv/c", "v2", "If-Match", "W/"+etag), 412) // If-Match compares strongly
	if w := ts.do("PUT", "/kv/c", "v2", "If-Match", `"not-it", `+etag); w.Code != 200 {
		t.Errorf("If-Match list naming the current ETag: got %d %s", w.Code, w.Body)
	}
	wantError(t, ts.do("PUT", "/kv/c", "v3", "If-Match", etag), 412)
	if w := ts.do("PUT", "/kv/c", "v3", "If-Match", "*"); w.Code != 200 {
		t.Errorf("If-Match * on an existing key: got %d %s", w.Code, w.Body)
	}
	if got := ts.do("GET", "/kv/c", "").Body.String(); got != "v3" {
		t.Errorf("value: got %q, want v3", got)
	}
}

func TestTTLHeaders(t *testing.T) {
	ts := newTestServer(t, testConfig())
	w := ts.do("PUT", "/kv/t?ttl=30", "v")
	var resp struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || !resp.ExpiresAt.Equal(ts.clock.now().Add(30*time.Second)) {
		t.Fatalf("expires_at: got %s, want now+30s", w.Body)
	}
	for _, m := range []string{"GET", "HEAD"} {
		exp, err := http.ParseTime(ts.do(m, "/kv/t", "").Header().Get("Expires"))
		if err != nil || !exp.Equal(resp.ExpiresAt.Truncate(time.Second)) {
			t.Errorf("%s Expires: got %v, %v, want %v", m, exp, err, resp.ExpiresAt.Truncate(time.Second))
		}
	}
	ts.clock.set(resp.ExpiresAt)
	wantError(t, ts.do("GET", "/kv/t", ""), 404)
	if w := ts.do("PUT", "/kv/t", "v"); w.Code != 200 || strings.Contains(w.Body.String(), "expires_at") {
		t.Errorf("PUT without ttl: got %d %s, want no expires_at", w.Code, w.Body)
	}
	if h := ts.do("GET", "/kv/t", "").Header(); h.Get("Expires") != "" {
		t.Errorf("permanent key has Expires %q", h.Get("Expires"))
	}
}

func TestParseTTL(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"30s", 30 * time.Second}, {"5m", 5 * time.Minute}, {"1h30m", 90 * time.Minute}, {"1", time.Second},
		{"1.5s", 1500 * time.Millisecond}, {"8760h", maxTTL}, {"31536000", maxTTL},
		{"0", 0}, {"-1", 0}, {"abc", 0}, {"1ms", 0}, {"999ms", 0}, {"8761h", 0}, {"31536001", 0},
		{"99999999999999999999", 0}, {"", 0}, {" 5", 0}, {"5 s", 0},
	}
	for _, tt := range tests {
		got, err := parseTTL(tt.in)
		if got != tt.want || (err == nil) != (tt.want != 0) {
			t.Errorf("parseTTL(%q): got %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestListPages(t *testing.T) {
	ts := newTestServer(t, testConfig())
	for _, k := range []string{"a/1", "a/2", "a/3", "b"} {
		ts.do("PUT", "/kv/"+k, "v")
	}
	var all []string
	for cursor := ""; ; {
		var page struct {
			Keys       []string
			NextCursor *string `json:"next_cursor"`
		}
		w := ts.do("GET", "/kv?prefix=a/&limit=2&cursor="+cursor, "")
		if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil || w.Code != 200 {
			t.Fatalf("list: got %d %s", w.Code, w.Body)
		}
		if all = append(all, page.Keys...); page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	if strings.Join(all, ",") != "a/1,a/2,a/3" {
		t.Errorf("keys: got %q, want a/1 a/2 a/3", all)
	}
	if w := ts.do("GET", "/kv?prefix=zzz", ""); w.Body.String() != "{\"keys\":[]}\n" {
		t.Errorf("empty list: got %q, want {\"keys\":[]}", w.Body)
	}
}

func TestRequestID(t *testing.T) {
	ts := newTestServer(t, testConfig())
	if got := ts.do("GET", "/healthz", "", "X-Request-ID", "abc-123").Header().Get("X-Request-ID"); got != "abc-123" {
		t.Errorf("sane ID: got %q, want it kept", got)
	}
	for _, bad := range []string{strings.Repeat("x", 65), "has space", "tab\there", "ünï"} {
		if got := ts.do("GET", "/healthz", "", "X-Request-ID", bad).Header().Get("X-Request-ID"); got == "" || got == bad {
			t.Errorf("ID %q: got %q, want a generated one", bad, got)
		}
	}
	if a, b := ts.do("GET", "/healthz", ""), ts.do("GET", "/healthz", ""); a.Header().Get("X-Request-ID") == b.Header().Get("X-Request-ID") {
		t.Error("two requests got the same generated ID")
	}
	if !strings.Contains(ts.log.String(), `"request_id":"abc-123"`) {
		t.Error("the access log lacks the request ID")
	}
}

// TestStorageFailuresAre503: a storage failure is a 503 with Retry-After, logged with its cause; a vanished
// bucket is one too, never a missing key; no log line holds a key or a value.
func TestStorageFailuresAre503(t *testing.T) {
	requests := [][2]string{{"PUT", "/kv/private-customer-key"}, {"GET", "/kv/private-customer-key"},
		{"HEAD", "/kv/private-customer-key"}, {"DELETE", "/kv/private-customer-key"}, {"GET", "/kv"},
		{"GET", "/readyz"}}
	for _, fault := range []string{"connection refused", "bucket removed"} {
		t.Run(fault, func(t *testing.T) {
			ts := newTestServer(t, testConfig())
			etag := ts.do("PUT", "/kv/private-customer-key", "secret-value-42").Header().Get("ETag")
			if fault == "bucket removed" {
				ts.s3.bucket = false
			} else {
				ts.s3.hooks(func(op, key string) error { return errors.New("dial tcp: connection refused") }, nil)
			}
			for _, r := range append(requests, [2]string{"PUT If-Match", "/kv/private-customer-key"}) {
				method, header := r[0], []string{}
				if method, _, _ = strings.Cut(method, " "); r[0] != method {
					header = []string{"If-Match", etag}
				}
				w := ts.do(method, r[1], "secret-value-42", header...)
				if w.Code != 503 || w.Header().Get("Retry-After") == "" {
					t.Errorf("%s %s: got %d, Retry-After %q, want 503 with Retry-After", r[0], r[1], w.Code, w.Header().Get("Retry-After"))
				}
				if strings.Contains(w.Body.String(), "refused") || strings.Contains(w.Body.String(), "NoSuchBucket") {
					t.Errorf("%s %s: the error body leaks internals: %s", r[0], r[1], w.Body)
				}
			}
			logs := ts.log.String()
			if strings.Contains(logs, "secret-value-42") || strings.Contains(logs, "private-customer-key") {
				t.Errorf("the log holds a value or a key:\n%s", logs)
			}
			if cause := map[string]string{"bucket removed": "NoSuchBucket"}[fault]; !strings.Contains(logs, cmp.Or(cause, fault)) {
				t.Errorf("the log lacks the cause %q:\n%s", cmp.Or(cause, fault), logs)
			}
		})
	}
}

// TestTransportErrorsNameNoKey: the S3 client's own errors carry the request URL, which names the key; the
// log must not.
func TestTransportErrorsNameNoKey(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now: every S3 call is refused
	env := map[string]string{"S3_BUCKET": "kv-test", "S3_ENDPOINT": endpoint, "S3_ACCESS_KEY": "k", "S3_SECRET_KEY": "s", "S3_TIMEOUT": "2s"}
	cfg, err := loadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	m := &metrics{}
	client, err := newS3Client(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(client, cfg.Bucket, cfg.S3Timeout, nil)
	st.ready.Store(true)
	var logs syncBuffer
	h := newServer(slog.New(slog.NewJSONHandler(&logs, nil)), st, m, testConfig(), &atomic.Bool{})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/kv/private-customer-key", nil))
	if w.Code != 503 || !strings.Contains(logs.String(), "connection refused") || strings.Contains(logs.String(), "private-customer-key") {
		t.Errorf("GET with S3 refusing: got %d, log:\n%s\nwant 503 and the cause logged without the key", w.Code, logs.String())
	}
	if _, ok := m.s3.Load(seriesKey{"GetObject", "error", 0}); !ok {
		t.Error("the failed S3 call was not counted under its operation")
	}
}

// TestStalledUploadIs408: a client that stops sending mid-body gets 408 once the client timeout passes, and
// nothing is stored. A real server, since a read deadline needs a real connection.
func TestStalledUploadIs408(t *testing.T) {
	ts := newTestServer(t, testConfig())
	srv := httptest.NewServer(ts.h)
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "PUT /kv/slow HTTP/1.1\r\nHost: kv\r\nContent-Length: 100\r\n\r\n0123456789")
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) // the test's own bound, far past the 200ms allowed
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled upload: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 408 {
		t.Errorf("stalled upload: got %d, want 408", resp.StatusCode)
	}
	if _, err := ts.st.Head(context.Background(), "slow", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("after the stalled upload: got %v, want nothing stored", err)
	}
	if strings.Contains(ts.log.String(), `"level":"ERROR"`) {
		t.Errorf("a client's stall was logged as a storage error:\n%s", ts.log)
	}
}

func TestHealthAndReady(t *testing.T) {
	ts := newTestServer(t, testConfig())
	for _, path := range []string{"/healthz", "/readyz"} {
		if w := ts.do("GET", path, ""); w.Code != 200 {
			t.Errorf("%s: got %d", path, w.Code)
		}
	}
	ts.stopping.Store(true)
	wantError(t, ts.do("GET", "/readyz", ""), 503)
	if w := ts.do("GET", "/healthz", ""); w.Code != 200 {
		t.Errorf("healthz while stopping: got %d, want 200", w.Code)
	}
}

// TestNotReadyUntilSetup: while the bucket check runs, /kv answers 503 with Retry-After, never what an
// unchecked bucket would make it say (here: that versioning is off), and nothing races (run with -race).
func TestNotReadyUntilSetup(t *testing.T) {
	f := newFakeS3()
	st := newStore(f, "test", time.Second, nil)
	release := make(chan struct{})
	f.before = func(op, key string) error {
		if op == "HeadBucket" {
			<-release
		}
		return nil
	}
	h := newServer(slog.New(slog.NewJSONHandler(io.Discard, nil)), st, &metrics{}, testConfig(), &atomic.Bool{})
	setup := make(chan error)
	go func() { setup <- st.Setup(context.Background(), true, true) }()
	var wg sync.WaitGroup
	var notReady atomic.Int64
	var once sync.Once
	for range 4 {
		wg.Go(func() {
			for i := range 200 {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest("GET", "/kv/k?versions", nil))
				switch {
				case w.Code == 503 && w.Header().Get("Retry-After") != "":
					notReady.Add(1)
				case w.Code != 200:
					t.Errorf("request %d: got %d %s, want 503 (not ready) or the history", i, w.Code, w.Body)
					return
				}
				if i == 50 {
					once.Do(func() { close(release) })
				}
			}
		})
	}
	wg.Wait()
	if err := <-setup; err != nil || notReady.Load() == 0 {
		t.Errorf("setup: %v, %d answers 503: want both sides of the check seen", err, notReady.Load())
	}
	if f.count("PutObject")+f.count("GetObject") != 0 {
		t.Error("a request reached S3 objects before the store was ready")
	}
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		ok   bool
	}{
		{"defaults", nil, true},
		{"no bucket", map[string]string{"S3_BUCKET": ""}, false},
		{"short bucket", map[string]string{"S3_BUCKET": "ab"}, false},
		{"half credentials", map[string]string{"S3_ACCESS_KEY": "k"}, false},
		{"bad port", map[string]string{"PORT": "http"}, false},
		{"port out of range", map[string]string{"PORT": "70000"}, false},
		{"bad timeout", map[string]string{"S3_TIMEOUT": "10"}, false},
		{"zero timeout", map[string]string{"CLIENT_TIMEOUT": "0s"}, false},
		{"negative timeout", map[string]string{"SHUTDOWN_TIMEOUT": "-1s"}, false},
		{"negative cache ttl", map[string]string{"CACHE_TTL": "-1s"}, false},
		{"bad size", map[string]string{"MAX_VALUE_BYTES": "lots"}, false},
		{"negative size", map[string]string{"CACHE_MAX_BYTES": "-1"}, false},
		{"bad level", map[string]string{"LOG_LEVEL": "loud"}, false},
		{"bad bool", map[string]string{"S3_CREATE_BUCKET": "perhaps"}, false},
		{"cache off, no cache ttl", map[string]string{"CACHE_MAX_BYTES": "0", "CACHE_TTL": "0"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(func(k string) string {
				if v, ok := tt.env[k]; ok {
					return v
				}
				return map[string]string{"S3_BUCKET": "kv-data"}[k]
			})
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (c.Port != "8080" || c.Region != "us-east-1" || c.MaxValueBytes != 25<<20 || c.S3Timeout != 10*time.Second) {
				t.Errorf("defaults: got %+v", c)
			}
			for k := range tt.env {
				if !tt.ok && !strings.Contains(err.Error(), k) {
					t.Errorf("error %q does not name %s", err, k)
				}
			}
		})
	}
}

func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	tests := []struct {
		name        string
		env         map[string]string
		cache       int64
		wantPercent int
		wantLimit   int64
	}{
		{"defaults", nil, 64 << 20, 400, 192 << 20},
		{"cache off", nil, 0, 400, 64 << 20},
		{"largest cache", nil, math.MaxInt64, 400, 1<<61 + 64<<20},
		{"GOGC set", map[string]string{"GOGC": "100"}, 64 << 20, 100, math.MaxInt64},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "1GiB"}, 64 << 20, 100, math.MaxInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			tuneGC(func(k string) string { return tt.env[k] }, tt.cache)
			if got := debug.SetGCPercent(100); got != tt.wantPercent {
				t.Errorf("GOGC: got %d, want %d", got, tt.wantPercent)
			}
			if got := debug.SetMemoryLimit(-1); got != tt.wantLimit {
				t.Errorf("memory limit: got %d, want %d", got, tt.wantLimit)
			}
		})
	}
}

// TestLogBuffer: every record comes out as slog.JSONHandler writes it, whether logBuffer formats it itself
// (fast: the access line) or hands it on. One buffer takes them all, in turn, so the time it formats once a
// second meets new seconds, zones and a second it saw before.
func TestLogBuffer(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 123456789, time.UTC)
	hit := func(f func(*recorder)) *recorder {
		a := &recorder{id: "3k2j4h5g6f7d8", method: "GET", route: "GET /kv/{key...}", status: 200, bytes: 1024,
			took: 123456 * time.Nanosecond}
		f(a)
		return a
	}
	line := []slog.Attr{slog.Any("", hit(func(*recorder) {}))}
	tests := []struct {
		name  string
		at    time.Time
		msg   string
		attrs []slog.Attr
		fast  bool
	}{
		{"access line", at, "request", line, true},
		{"same second", at.Add(time.Millisecond), "request", line, true},
		{"whole second", at.Truncate(time.Second).Add(time.Second), "request", line, true},
		{"tenth of a second", at.Truncate(time.Second).Add(2*time.Second + 100*time.Millisecond), "request", line, true},
		{"other zone", at.In(time.FixedZone("", -90*60)), "request", line, true},
		{"back to UTC", at, "request", line, true},
		{"named zone", at.Add(-400 * 24 * time.Hour).In(time.FixedZone("CET", 3600)), "request", line, true},
		{"unmatched, client gone, slow", at, "request", []slog.Attr{slog.Any("", hit(func(a *recorder) {
			a.route, a.status, a.bytes, a.took = "", 499, 0, 90*time.Minute+time.Microsecond
		}))}, true},
		{"no time taken", at, "request", []slog.Attr{slog.Any("", hit(func(a *recorder) { a.took = 0 }))}, true},
		{"printable ASCII", at, " !#$%&'()*+,-./<=>?@[]^_`{|}~", []slog.Attr{slog.Any("", hit(func(a *recorder) {
			a.id = "<a&b>"
		}))}, true},
		{"quote in id", at, "request", []slog.Attr{slog.Any("", hit(func(a *recorder) { a.id = `a"b` }))}, false},
		{"backslash in id", at, "request", []slog.Attr{slog.Any("", hit(func(a *recorder) { a.id = `a\b` }))}, false},
		{"control character", at, "request\x7f", line, false},
		{"not ASCII", at, "request", []slog.Attr{slog.Any("", hit(func(a *recorder) { a.method = "PÜT" }))}, false},
		{"under a key", at, "request", []slog.Attr{slog.Any("access", hit(func(*recorder) {}))}, false},
		{"with more", at, "request", append(line, slog.Int("n", 1)), false},
		{"other records", at, "listening", []slog.Attr{slog.String("addr", ":8080"), slog.Bool("b", true),
			slog.Any("err", errors.New("e"))}, false},
		{"no attributes", at, "stopped", nil, false},
		{"zero time", time.Time{}, "request", line, false},
		{"year 10000", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "request", line, false},
		{"after all that", at.Add(time.Second), "request", line, true},
	}
	var got bytes.Buffer
	l := newLogBuffer(&got, slog.LevelInfo, time.Hour)
	defer l.close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := slog.NewRecord(tt.at, slog.LevelWarn, tt.msg, 0)
			r.AddAttrs(tt.attrs...)
			var want bytes.Buffer
			slog.NewJSONHandler(&want, nil).Handle(context.Background(), r)
			got.Reset()
			if err := slog.New(l).Handler().Handle(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			l.mu.Lock()
			l.w.Flush()
			l.mu.Unlock()
			if got.String() != want.String() {
				t.Errorf("got %s, want %s", got.String(), want.String())
			}
			if fast := accessLine(r) != nil; fast != tt.fast {
				t.Errorf("formatted by logBuffer itself: got %v, want %v", fast, tt.fast)
			}
		})
	}
}

// TestLogBufferConcurrent: lines logged at once, through either path, come out whole, none lost.
func TestLogBufferConcurrent(t *testing.T) {
	var out bytes.Buffer
	l := newLogBuffer(&out, slog.LevelInfo, time.Millisecond)
	log := slog.New(l)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				r := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
				r.AddAttrs(slog.Any("", &recorder{id: fmt.Sprint(g, "-", i), method: "GET", status: 200}))
				l.Handle(context.Background(), r)
				log.Info("other", "err", errors.New("a \"quoted\" error"))
			}
		})
	}
	wg.Wait()
	l.close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 8*500*2 {
		t.Errorf("got %d lines, want %d", len(lines), 8*500*2)
	}
	for _, line := range lines {
		if !json.Valid([]byte(line)) {
			t.Fatalf("got a line that is not JSON: %s", line)
		}
	}
}

// TestLogBufferFlushes: a line reaches the output with no other line, and no shutdown, behind it.
func TestLogBufferFlushes(t *testing.T) {
	pr, pw := io.Pipe()
	l := newLogBuffer(pw, slog.LevelInfo, 10*time.Millisecond)
	defer l.close()
	slog.New(l).Info("stopped", "status", 200)
	line := make(chan string, 1)
	go func() { s, _ := bufio.NewReader(pr).ReadString('\n'); line <- s }()
	select {
	case s := <-line:
		if !strings.Contains(s, `"msg":"stopped","status":200}`) {
			t.Errorf("got %q, want the line logged", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the line was not written within 5 s; want it within the flush interval, 10 ms")
	}
}

// TestReadmeDefaults: every default the README's configuration table gives is accepted, and means the same
// as leaving the variable unset.
func TestReadmeDefaults(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `([A-Z0-9_]+)` \\| `([^`]*)`").FindAllStringSubmatch(string(readme), -1)
	if len(rows) < 12 {
		t.Fatalf("found %d variables with a default in the README's table, want all of them (12 or more)", len(rows))
	}
	env := func(extra ...string) func(string) string {
		return func(k string) string {
			if len(extra) == 2 && k == extra[0] {
				return extra[1]
			}
			return map[string]string{"S3_BUCKET": "kv-data"}[k]
		}
	}
	unset, err := loadConfig(env())
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		t.Run(row[1], func(t *testing.T) {
			c, err := loadConfig(env(row[1], row[2]))
			if err != nil || c != unset {
				t.Errorf("%s=%s (the README's default): got %+v, %v, want the same as unset: %+v", row[1], row[2], c, err, unset)
			}
		})
	}
}

// scrape reads /metrics and checks the text format's basics: each family's HELP and TYPE once, before its
// samples, and every sample a name, optional labels and a number.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if ct := w.Header().Get("Content-Type"); w.Code != 200 || ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Fatalf("/metrics: got %d, Content-Type %q", w.Code, ct)
	}
	sample := regexp.MustCompile(`^([a-z_]+)(\{[a-z_]+="[^"\n]*"(,[a-z_]+="[^"\n]*")*\})? [-+0-9.e]+$`)
	seen := map[string]bool{}
	family := ""
	for _, line := range strings.Split(strings.TrimSpace(w.Body.String()), "\n") {
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			family, _, _ = strings.Cut(f, " ")
			if seen[family] {
				t.Errorf("family %s appears twice", family)
			}
			seen[family] = true
			continue
		}
		m := sample.FindStringSubmatch(line)
		if strings.HasPrefix(line, "# HELP ") {
			continue
		} else if m == nil || !strings.HasPrefix(m[1], family) {
			t.Errorf("not a sample of family %s: %q", family, line)
		}
	}
	return w.Body.String()
}

func TestMetrics(t *testing.T) {
	ts := newTestServer(t, testConfig())
	ts.do("PUT", "/kv/k", "v")
	ts.do("GET", "/kv/k", "")
	ts.do("GET", "/kv/private-missing", "")
	ts.do("GET", "/kv/private-missing", "")
	ts.do("GET", "/kv/a//b", "")
	ts.do("BREW", "/kv/k", "")
	body := scrape(t, ts.h)
	for _, line := range []string{
		`http_request_duration_seconds_count{route="PUT /kv/{key...}",method="PUT",code="200"} 1`,
		`http_request_duration_seconds_count{route="GET /kv/{key...}",method="GET",code="200"} 1`,
		`http_request_duration_seconds_count{route="GET /kv/{key...}",method="GET",code="404"} 2`,
		`http_request_duration_seconds_count{route="unmatched",method="GET",code="400"} 1`,
		`http_request_duration_seconds_count{route="/",method="other",code="405"} 1`,
		`http_request_duration_seconds_bucket{route="GET /kv/{key...}",method="GET",code="404",le="+Inf"} 2`,
		`http_requests_in_flight 1`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
	if strings.Contains(body, "private-missing") {
		t.Error("a key reached a metric label")
	}
}

// TestHistogramsAgree: scrapes taken while requests are counted never show a bucket above +Inf, a _count
// other than +Inf, or a bucket below the one before it.
func TestHistogramsAgree(t *testing.T) {
	ts := newTestServer(t, testConfig())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					ts.do("GET", "/healthz", "")
				}
			}
		})
	}
	bucket := regexp.MustCompile(`(?m)^http_request_duration_seconds_bucket\{route="GET /healthz",method="GET",code="200",le="([^"]+)"\} (\d+)$`)
	count := regexp.MustCompile(`(?m)^http_request_duration_seconds_count\{route="GET /healthz",method="GET",code="200"\} (\d+)$`)
	for range 300 {
		body := scrape(t, ts.h)
		bs, c := bucket.FindAllStringSubmatch(body, -1), count.FindStringSubmatch(body)
		if len(bs) == 0 || c == nil {
			continue
		}
		prev := int64(0)
		for _, b := range bs {
			n, _ := strconv.ParseInt(b[2], 10, 64)
			if n < prev {
				t.Fatalf("bucket le=%s is %d, below the one before it (%d)", b[1], n, prev)
			}
			prev = n
		}
		if c[1] != bs[len(bs)-1][2] {
			t.Fatalf("_count %s, +Inf %s: want them equal", c[1], bs[len(bs)-1][2])
		}
	}
	close(stop)
	wg.Wait()
}

func TestCheckKey(t *testing.T) {
	fits := strings.Repeat("k", maxObjectKey-15)
	tests := []struct {
		key    string
		prefix bool
		ok     bool
	}{
		{"a", false, true}, {"a/b", false, true}, {"ünï/cødé", false, true}, {".hidden/..x/x..", false, true},
		{fits, false, true}, {fits + "k", false, false}, {"!" + fits[1:], false, false},
		{"", false, false}, {"/a", false, false}, {"a/", false, false}, {"a//b", false, false},
		{".", false, false}, {"a/..", false, false}, {"a\x00", false, false}, {"a\u0085", false, false},
		{"\xff", false, false}, {"a\x7f", false, false},
		{"", true, true}, {"a/", true, true}, {"a/.", true, true}, {"a//", true, false}, {"./a", true, false},
	}
	for _, tt := range tests {
		if err := checkKey(tt.key, tt.prefix); (err == nil) != tt.ok {
			t.Errorf("checkKey(%.20q, prefix %v): got %v, want ok=%v", tt.key, tt.prefix, err, tt.ok)
		}
	}
	if n := len(indexKey(fits, time.Now())); n != maxObjectKey {
		t.Errorf("the index entry of the longest key that fits: got %d bytes, want %d", n, maxObjectKey)
	}
	if n := testing.AllocsPerRun(100, func() { checkKey("some/ordinary/key", false) }); n != 0 {
		t.Errorf("checkKey allocates %v times per call, want 0", n)
	}
}

func TestVersionRequests(t *testing.T) {
	ts := newTestServer(t, testConfig())
	ts.s3.versioned = true
	ts.st.ready.Store(false)
	if err := ts.st.Setup(context.Background(), false, false); err != nil || !ts.st.versioned {
		t.Fatalf("an already versioned bucket was not noticed: %v", err)
	}
	var put struct{ Version string }
	json.Unmarshal(ts.do("PUT", "/kv/k", "one").Body.Bytes(), &put)
	if put.Version == "" {
		t.Fatal("PUT on a versioned bucket: no version")
	}
	ts.do("PUT", "/kv/k", "two")
	if w := ts.do("GET", "/kv/k?version="+put.Version, ""); w.Body.String() != "one" || w.Header().Get("X-Version-Id") != put.Version {
		t.Errorf("GET ?version: got %q, X-Version-Id %q", w.Body, w.Header().Get("X-Version-Id"))
	}
	if v := ts.do("HEAD", "/kv/k", "").Header().Get("X-Version-Id"); v == put.Version || v == "" {
		t.Errorf("HEAD X-Version-Id: got %q, want the newest version", v)
	}
	var list struct {
		Versions []map[string]any
		Next     string `json:"next_cursor"`
	}
	w := ts.do("GET", "/kv/k?versions&limit=1", "")
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list.Versions) != 1 || list.Next == "" {
		t.Fatalf("GET ?versions&limit=1: got %s", w.Body)
	}
	for _, field := range []string{"version", "size", "etag", "last_modified", "latest", "deleted"} {
		if _, ok := list.Versions[0][field]; !ok {
			t.Errorf("a version lacks %q: %v", field, list.Versions[0])
		}
	}
	w = ts.do("GET", "/kv/k?versions&limit=1&cursor="+list.Next, "")
	if !strings.Contains(w.Body.String(), put.Version) || strings.Contains(w.Body.String(), "next_cursor") {
		t.Errorf("second page: got %s, want the first version and no next_cursor", w.Body)
	}
	wantError(t, ts.do("GET", "/kv/k?versions&cursor=!!", ""), 400)
	wantError(t, ts.do("GET", "/kv/k?versions&cursor=IA", ""), 400) // a space: not a version id
	wantError(t, ts.do("GET", "/kv/k?versions&limit=0", ""), 400)
	wantError(t, ts.do("GET", "/kv/k?version=has%20space", ""), 400)
	wantError(t, ts.do("GET", "/kv/k?version=nonsense", ""), 400)
	wantError(t, ts.do("HEAD", "/kv/k?version=nonsense", ""), 400)
	wantError(t, ts.do("DELETE", "/kv/k?version=nonsense", ""), 400)
	wantError(t, ts.do("DELETE", "/kv/k?versions", ""), 400)
	wantError(t, ts.do("GET", "/kv/k?version=v9999", ""), 404)
	for range 2 {
		if w := ts.do("DELETE", "/kv/k?version="+put.Version, ""); w.Code != 204 {
			t.Errorf("DELETE ?version: got %d, want 204 (idempotent)", w.Code)
		}
	}
	wantError(t, ts.do("GET", "/kv/k?version="+put.Version, ""), 404)
}

func TestAuthToken(t *testing.T) {
	cfg := testConfig()
	cfg.AuthToken = "s3cr3t-token"
	ts := newTestServer(t, cfg)
	for _, tt := range []struct {
		method, target, auth string
		status               int
	}{
		{"PUT", "/kv/k", "", 401},
		{"PUT", "/kv/k", "Bearer wrong", 401},
		{"PUT", "/kv/k", "s3cr3t-token", 401},
		{"PUT", "/kv/k", "bearer s3cr3t-token", 401},
		{"GET", "/kv", "", 401},
		{"GET", "/metrics", "", 401},
		{"GET", "/kv/a//b", "", 401}, // no hint about keys before authentication
		{"PUT", "/kv/k", "Bearer s3cr3t-token", 200},
		{"GET", "/kv/k", "Bearer s3cr3t-token", 200},
		{"GET", "/metrics", "Bearer s3cr3t-token", 200},
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
	} {
		w := ts.do(tt.method, tt.target, "v", "Authorization", tt.auth)
		if w.Code != tt.status {
			t.Errorf("%s %s with %q: got %d, want %d", tt.method, tt.target, tt.auth, w.Code, tt.status)
		}
		if tt.status == 401 {
			wantError(t, w, 401)
			if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer")
			}
		}
	}
	if strings.Contains(ts.log.String(), "s3cr3t-token") {
		t.Error("the log holds the token")
	}
}

// FuzzKeyPath sends any path under /kv/ through the handler: no 5xx, no panic, and a key that is accepted
// stores exactly the value, under an object name that maps back to the key and fits S3.
func FuzzKeyPath(f *testing.F) {
	for _, s := range []string{"a", "a/b", "a%2Fb", "%2e%2e/x", "a//b", "ü/%C3%BC", "%ff", "a!b/!!", "%00", "@/.x",
		"0?%", strings.Repeat("k", 1010), "a/" + strings.Repeat("b", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.ParseRequestURI("/kv/" + raw)
		if err != nil {
			return // net/http answers 400 before kv sees it
		}
		u.RawQuery = "" // the key is the subject here (a query can make a good key's PUT a 400)
		ts := newTestServer(t, testConfig())
		r := httptest.NewRequest("PUT", "/", strings.NewReader("value"))
		r.URL, r.RequestURI = u, u.RequestURI()
		w := httptest.NewRecorder()
		ts.h.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("PUT %q: got %d %s", raw, w.Code, w.Body)
		}
		key, _ := strings.CutPrefix(u.Path, "/kv/")
		if (w.Code == 200) != (checkKey(key, false) == nil) {
			t.Fatalf("PUT %q: got %d, but checkKey says %v", raw, w.Code, checkKey(key, false))
		}
		if w.Code != 200 {
			return
		}
		if got, ok := keyOf(strings.TrimPrefix(valueName(key), valuePrefix)); !ok || got != key {
			t.Fatalf("key %q: object %q maps back to %q, %v", key, valueName(key), got, ok)
		}
		if n := len(indexKey(key, time.Now())); n > maxObjectKey {
			t.Fatalf("key %q: index entry of %d bytes", key, n)
		}
		if v, err := get(t, ts.st, key); err != nil || v != "value" {
			t.Fatalf("key %q: read back %q, %v", key, v, err)
		}
	})
}

func FuzzParseTTL(f *testing.F) {
	for _, s := range []string{"30s", "1", "0", "-1", "1ms", "1h30m", "8760h", "99999999999999999999", "1e9", "+5", "", "5 s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseTTL(s)
		if err == nil && (d < time.Second || d > maxTTL) {
			t.Fatalf("parseTTL(%q) = %v, outside [1s, %v]", s, d, maxTTL)
		}
		if err != nil && !strings.Contains(err.Error(), "30s") {
			t.Fatalf("parseTTL(%q): the error does not show the accepted form: %v", s, err)
		}
	})
}

func FuzzRequestID(f *testing.F) {
	for _, s := range []string{"abc-123", "", "has space", strings.Repeat("x", 65), "ünï", "a\tb", "\x7f"} {
		f.Add(s)
	}
	ts := newTestServer(f, testConfig())
	f.Fuzz(func(t *testing.T, id string) {
		r := httptest.NewRequest("GET", "/healthz", nil)
		r.Header["X-Request-Id"] = []string{id}
		w := httptest.NewRecorder()
		ts.h.ServeHTTP(w, r)
		got := w.Header().Get("X-Request-ID")
		if !token(got, 64) || (got == id) != token(id, 64) {
			t.Fatalf("X-Request-ID %q: answered with %q", id, got)
		}
	})
}
