package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// fakeS3 is an in-memory S3 bucket with the semantics the store relies on: conditional PutObject,
// If-Match on DeleteObject (as AWS honours it), typed not-found errors, sorted paginated listing.
type fakeS3 struct {
	mu        sync.Mutex
	objects   map[string]fakeObject   // the current version of each object
	history   map[string][]fakeObject // with versioning: every version and delete marker, oldest first
	versioned bool
	seq       int
	bucket    bool
	calls     map[string]int
	// hook runs (unlocked) at the start of each call, to inject failures or races.
	hook func(op, key string) error
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

// stamp gives a new version its id and a strictly later time (locked).
func (f *fakeS3) stamp(o *fakeObject) {
	f.seq++
	o.modified = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(f.seq) * time.Millisecond)
	if f.versioned {
		o.version = fmt.Sprintf("v%04d", f.seq)
	}
}

// version finds key's version id as MinIO answers: malformed ids are InvalidArgument (GET) or a bare 400
// (HEAD), unknown ones NoSuchVersion (GET) or NotFound (HEAD), delete markers MethodNotAllowed.
func (f *fakeS3) version(key, id string, head bool) (fakeObject, error) {
	switch _, err := fmt.Sscanf(id, "v%d", new(int)); {
	case err != nil && head:
		return fakeObject{}, apiErr("BadRequest")
	case err != nil:
		return fakeObject{}, apiErr("InvalidArgument")
	}
	for _, o := range f.history[key] {
		switch {
		case o.version != id:
		case o.marker:
			return o, apiErr("MethodNotAllowed")
		default:
			return o, nil
		}
	}
	if head {
		return fakeObject{}, &types.NotFound{}
	}
	return fakeObject{}, apiErr("NoSuchVersion")
}

func apiErr(code string) error { return &smithy.GenericAPIError{Code: code, Message: code} }

func (f *fakeS3) enter(op, key string) error {
	f.mu.Lock()
	f.calls[op]++
	hook := f.hook
	f.mu.Unlock()
	if hook != nil {
		return hook(op, key)
	}
	return nil
}

func (f *fakeS3) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
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
	defer f.mu.Unlock()
	cur, exists := f.objects[*in.Key]
	switch {
	case in.IfNoneMatch != nil && exists:
		return nil, apiErr("PreconditionFailed")
	case in.IfMatch != nil && !exists:
		return nil, &types.NoSuchKey{}
	case in.IfMatch != nil && *in.IfMatch != cur.etag:
		return nil, apiErr("PreconditionFailed")
	}
	sum := md5.Sum(body)
	o := fakeObject{body: body, etag: `"` + hex.EncodeToString(sum[:]) + `"`, ctype: aws.ToString(in.ContentType), meta: in.Metadata}
	f.stamp(&o)
	f.objects[*in.Key] = o
	if f.versioned {
		f.history[*in.Key] = append(f.history[*in.Key], o)
	}
	return &s3.PutObjectOutput{ETag: &o.etag, VersionId: nonEmpty(o.version)}, nil
}

func (f *fakeS3) object(op, key string, version *string, notFound error) (fakeObject, error) {
	if err := f.enter(op, key); err != nil {
		return fakeObject{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if version != nil {
		return f.version(key, *version, op == "HeadObject")
	}
	o, ok := f.objects[key]
	if !ok {
		return o, notFound
	}
	return o, nil
}

func (f *fakeS3) GetObject(ctx context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	o, err := f.object("GetObject", *in.Key, in.VersionId, &types.NoSuchKey{})
	if err != nil {
		return nil, err
	}
	return &s3.GetObjectOutput{Body: io.NopCloser(bytes.NewReader(o.body)), ContentLength: aws.Int64(int64(len(o.body))),
		ETag: &o.etag, ContentType: &o.ctype, LastModified: &o.modified, Metadata: o.meta, VersionId: nonEmpty(o.version)}, nil
}

func (f *fakeS3) HeadObject(ctx context.Context, in *s3.HeadObjectInput, _ ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	o, err := f.object("HeadObject", *in.Key, in.VersionId, &types.NotFound{})
	if err != nil {
		return nil, err
	}
	return &s3.HeadObjectOutput{ContentLength: aws.Int64(int64(len(o.body))), ETag: &o.etag, ContentType: &o.ctype,
		LastModified: &o.modified, Metadata: o.meta, VersionId: nonEmpty(o.version)}, nil
}

func (f *fakeS3) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, _ ...func(*s3.Options)) (*s3.DeleteObjectOutput, error) {
	if err := f.enter("DeleteObject", *in.Key); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if o, ok := f.objects[*in.Key]; ok && in.IfMatch != nil && *in.IfMatch != o.etag {
		return nil, apiErr("PreconditionFailed")
	}
	if in.VersionId != nil { // for good; S3 does not mind an unknown version
		var api smithy.APIError
		if _, err := f.version(*in.Key, *in.VersionId, false); errors.As(err, &api) && api.ErrorCode() == "InvalidArgument" {
			return nil, err
		}
		h := slices.DeleteFunc(f.history[*in.Key], func(o fakeObject) bool { return o.version == *in.VersionId })
		f.history[*in.Key] = h
		if delete(f.objects, *in.Key); len(h) > 0 && !h[len(h)-1].marker {
			f.objects[*in.Key] = h[len(h)-1]
		}
		return &s3.DeleteObjectOutput{}, nil
	}
	delete(f.objects, *in.Key)
	if f.versioned {
		m := fakeObject{marker: true}
		f.stamp(&m)
		f.history[*in.Key] = append(f.history[*in.Key], m)
	}
	return &s3.DeleteObjectOutput{}, nil
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
	limit := int(aws.ToInt32(in.MaxKeys))
	if limit == 0 {
		limit = 1000
	}
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
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.bucket {
		return nil, &types.NotFound{}
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

func newFakeStore(t testing.TB) (*Store, *fakeS3, *clock) {
	t.Helper()
	f := newFakeS3()
	st := newStore(f, "test", time.Second, nil)
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)}
	st.now = c.now
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
				t.Errorf("objectPath(%q) = %q, want %q", tt.key, got, tt.want)
			}
			if got, ok := keyOf("", tt.want); !ok || got != tt.key {
				t.Errorf("keyOf(%q) = %q, %v, want %q", tt.want, got, ok, tt.key)
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
	for _, name := range []string{"v/elsewhere", "v/a!!", "v/a!b!", "x/a!"} {
		if k, ok := keyOf(valuePrefix, name); ok {
			t.Errorf("keyOf(%q) = %q: accepted an object name kv did not write", name, k)
		}
	}
}

func TestFailTranslatesS3Errors(t *testing.T) {
	st, _, _ := newFakeStore(t)
	tests := []struct {
		err  error
		want error
	}{
		{&types.NoSuchKey{}, ErrNotFound},
		{&types.NotFound{}, ErrNotFound},
		{apiErr("NoSuchKey"), ErrNotFound},
		{apiErr("NotFound"), ErrNotFound},
		{apiErr("PreconditionFailed"), ErrPrecondition},
		{apiErr("ConditionalRequestConflict"), ErrPrecondition},
		{apiErr("KeyTooLongError"), ErrBadKey},
		{apiErr("XMinioInvalidObjectName"), ErrBadKey},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.err), func(t *testing.T) {
			if got := st.fail("get", "k", fmt.Errorf("wrapped: %w", tt.err)); !errors.Is(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	other := apiErr("InternalError")
	got := st.fail("get", "some/key", other)
	if !errors.Is(got, other) || !strings.Contains(got.Error(), `s3 get "some/key"`) {
		t.Errorf("got %v, want the error wrapped with operation and key", got)
	}
	if st.fail("get", "k", nil) != nil {
		t.Error("fail(nil) is not nil")
	}
}

// storeAcceptance runs against the fake and, when S3_ENDPOINT is set, a real S3, so the fake cannot drift.
func TestStoreAcceptance(t *testing.T) {
	impls := map[string]*Store{"fake": newStore(newFakeS3(), "test", time.Second, nil)}
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
			if err := st.Delete(ctx, p+"missing"); !errors.Is(err, ErrNotFound) {
				t.Errorf("delete missing: got %v, want ErrNotFound", err)
			}
			m := put(t, st, p+"a", "one", PutOptions{ContentType: "text/plain", IfNoneMatch: true})
			if _, err := st.Put(ctx, p+"a", strings.NewReader("two"), 3, PutOptions{IfNoneMatch: true}); !errors.Is(err, ErrPrecondition) {
				t.Errorf("If-None-Match on existing key: got %v, want ErrPrecondition", err)
			}
			if _, err := st.Put(ctx, p+"a", strings.NewReader("two"), 3, PutOptions{IfMatch: `"0123"`}); !errors.Is(err, ErrPrecondition) {
				t.Errorf("wrong If-Match: got %v, want ErrPrecondition", err)
			}
			if _, err := st.Put(ctx, p+"none", strings.NewReader("two"), 3, PutOptions{IfMatch: m.ETag}); !errors.Is(err, ErrPrecondition) {
				t.Errorf("If-Match on missing key: got %v, want ErrPrecondition", err)
			}
			m2 := put(t, st, p+"a", "two", PutOptions{IfMatch: m.ETag})
			if got, err := get(t, st, p+"a"); err != nil || got != "two" {
				t.Errorf("get after If-Match write: got %q, %v, want two", got, err)
			}
			h, err := st.Head(ctx, p+"a", "")
			if err != nil || h.ETag != m2.ETag || h.Size != 3 {
				t.Errorf("head: got %+v, %v, want etag %s size 3", h, err, m2.ETag)
			}
			put(t, st, p+"a/b", "nested", PutOptions{})
			put(t, st, p+"!x", "bang", PutOptions{})
			put(t, st, p+"a-z", "dash", PutOptions{})
			put(t, st, p+"b", "", PutOptions{})
			var all []string
			for after := ""; ; {
				keys, next, err := st.List(ctx, p, after, 2)
				if err != nil {
					t.Fatalf("list: %v", err)
				}
				all = append(all, keys...)
				if next == "" {
					break
				}
				after = next
			}
			want := []string{p + "!x", p + "a", p + "a-z", p + "a/b", p + "b"}
			if !slices.Equal(all, want) {
				t.Errorf("list pages: got %q, want %q", all, want)
			}
			if keys, _, _ := st.List(ctx, p+"a/", "", 10); !slices.Equal(keys, []string{p + "a/b"}) {
				t.Errorf("list prefix a/: got %q, want only %q", keys, p+"a/b")
			}
			for _, k := range want {
				if err := st.Delete(ctx, k); err != nil {
					t.Errorf("delete %q: %v", k, err)
				}
			}
			if keys, _, _ := st.List(ctx, p, "", 10); len(keys) != 0 {
				t.Errorf("list after deletes: got %q, want none", keys)
			}
		})
	}
}

// realStore is a store on the S3 the environment names, or nil (the test says why) when there is none.
// versioned: a bucket of its own ("-versioned") with versioning on.
func realStore(t *testing.T, versioned bool) *Store {
	t.Helper()
	if os.Getenv("S3_ENDPOINT") == "" && os.Getenv("CI") != "" {
		t.Fatal("CI is set but S3_ENDPOINT is not: the real-S3 acceptance test must run there")
	}
	if os.Getenv("S3_ENDPOINT") == "" {
		t.Log("S3_ENDPOINT is unset: the real-S3 half of this test is skipped (set S3_ENDPOINT, S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY)")
		return nil
	}
	cfg, err := loadConfig(func(k string) string {
		if k == "S3_BUCKET" && versioned {
			return cmp.Or(os.Getenv(k), "kv-test") + "-versioned"
		}
		if k == "S3_BUCKET" {
			return cmp.Or(os.Getenv(k), "kv-test")
		}
		return os.Getenv(k)
	})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	client, err := newS3Client(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(client, cfg.Bucket, cfg.S3Timeout, nil)
	if err := st.EnsureBucket(context.Background(), true); err != nil {
		t.Fatalf("bucket %q on %s: %v", cfg.Bucket, cfg.S3Endpoint, err)
	}
	if err := st.SetupVersioning(context.Background(), versioned); err != nil {
		t.Fatal(err)
	}
	return st
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
		t.Errorf("after If-None-Match over expired value: got %q, %v, want fresh", got, err)
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
	put(t, st, "forever", "v", PutOptions{})
	c.set(c.now().Add(2 * time.Second))
	n, err := st.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("sweep: got %d, %v, want 1 deleted", n, err)
	}
	for key, want := range map[string]bool{"gone": false, "later": true, "rewritten": true, "forever": true} {
		if _, ok := f.objects[valueName(key)]; ok != want {
			t.Errorf("object of %q present: got %v, want %v", key, ok, want)
		}
	}
	var index []string
	for name := range f.objects {
		if strings.HasPrefix(name, indexPrefix) {
			index = append(index, name)
		}
	}
	if len(index) != 1 || !strings.HasSuffix(index[0], "/later!") {
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
	var entries int
	for name := range f.objects {
		if strings.HasPrefix(name, indexPrefix) {
			entries++
		}
	}
	if _, err := get(t, st, "live"); err != nil || entries != 1 {
		t.Errorf("before expiry: got %v and %d index entries, want the value and its entry kept", err, entries)
	}
}

func TestIfMatchRacingADelete(t *testing.T) {
	st, f, _ := newFakeStore(t)
	m := put(t, st, "k", "v", PutOptions{})
	f.hook = func(op, key string) error {
		if op == "PutObject" { // between kv's HEAD and its conditional PUT, another client deletes the key
			f.hook = nil
			st.Delete(context.Background(), "k")
		}
		return nil
	}
	if _, err := st.Put(context.Background(), "k", strings.NewReader("x"), 1, PutOptions{IfMatch: m.ETag}); !errors.Is(err, ErrPrecondition) {
		t.Errorf("If-Match racing a delete: got %v, want ErrPrecondition", err)
	}
}

func TestDeleteRacingAWriteDeletes(t *testing.T) {
	st, f, _ := newFakeStore(t)
	put(t, st, "k", "old", PutOptions{})
	f.hook = func(op, key string) error {
		if op == "DeleteObject" { // a write lands between the DELETE's HEAD and its DeleteObject
			f.hook = nil
			put(t, st, "k", "new", PutOptions{})
		}
		return nil
	}
	if err := st.Delete(context.Background(), "k"); err != nil {
		t.Fatalf("DELETE racing a write: got %v, want it deleted as documented", err)
	}
	if _, err := get(t, st, "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after the DELETE: got %v, want ErrNotFound", err)
	}
}

func TestSweepSparesARewrite(t *testing.T) {
	st, f, c := newFakeStore(t)
	put(t, st, "k", "old", PutOptions{TTL: time.Second})
	c.set(c.now().Add(2 * time.Second))
	// A client rewrites the key between the sweeper's HEAD and its DELETE.
	f.hook = func(op, key string) error {
		if op == "DeleteObject" && key == valueName("k") {
			f.hook = nil
			put(t, st, "k", "new", PutOptions{})
		}
		return nil
	}
	if n, err := st.Sweep(context.Background()); err != nil || n != 0 {
		t.Fatalf("sweep: got %d, %v, want 0 deleted", n, err)
	}
	if got, err := get(t, st, "k"); err != nil || got != "new" {
		t.Errorf("after the race: got %q, %v, want the rewrite to survive", got, err)
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

func TestEnsureBucket(t *testing.T) {
	st, f, _ := newFakeStore(t)
	f.bucket = false
	if err := st.EnsureBucket(context.Background(), false); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing bucket, no create: got %v, want ErrNotFound", err)
	}
	if err := st.EnsureBucket(context.Background(), true); err != nil || !f.bucket {
		t.Errorf("missing bucket, create: got %v, bucket %v", err, f.bucket)
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
		c.put(k, entry(k, "123456789"))
	}
	if e, _, _, _ := c.get("a", now); e == nil { // a becomes the most recent
		t.Fatal("a is not cached")
	}
	c.put("d", entry("d", "123456789"))
	if got := cachedKeys(c); !slices.Equal(got, []string{"d", "a", "c"}) {
		t.Errorf("after evicting: got %q, want [d a c] (b was least recently used)", got)
	}
	if used, items := c.stats(); used != 30 || items != 3 || c.evictions.Load() != 1 {
		t.Errorf("stats: got %d bytes, %d items, %d evictions, want 30, 3, 1", used, items, c.evictions.Load())
	}
	c.put("e", entry("e", strings.Repeat("x", 25))) // 26 bytes: evicts all but one... or more
	if used, _ := c.stats(); used > 30 {
		t.Errorf("bytes held: got %d, want at most 30", used)
	}
	c.put("huge", entry("huge", strings.Repeat("x", 31)))
	if e, _, _, _ := c.get("huge", now); e != nil {
		t.Error("a value larger than the cache was cached")
	}
	if newCache(0, 0) != nil {
		t.Error("CACHE_MAX_BYTES=0 did not turn the cache off")
	}
	big := newCache(64<<20, 0)
	if big.fits(cacheMaxItem+1) || !big.fits(cacheMaxItem) {
		t.Errorf("fits: values up to %d bytes, and no larger, should be cached", cacheMaxItem)
	}
}

func TestCacheExpiryAndFreshness(t *testing.T) {
	now := time.Now()
	c := newCache(1<<20, time.Minute)
	e := entry("ttl", "v")
	e.meta.ExpiresAt, e.stored = now.Add(time.Second), now
	c.put("ttl", e)
	if got, _, _, _ := c.get("ttl", now.Add(time.Second-1)); got == nil {
		t.Error("1ns before expiry: not served")
	}
	if got, _, leader, _ := c.get("ttl", now.Add(time.Second)); got != nil || !leader {
		t.Error("at expiry: served from the cache")
	}
	e = entry("fresh", "v")
	e.stored = now
	c.put("fresh", e)
	if got, _, _, _ := c.get("fresh", now.Add(time.Minute)); got != nil {
		t.Error("served past CACHE_TTL")
	}
}

func newCachedStore(t *testing.T) (*Store, *fakeS3) {
	t.Helper()
	st, f, _ := newFakeStore(t)
	st.cache = newCache(1<<20, 0)
	return st, f
}

func TestCacheWriteThrough(t *testing.T) {
	st, f := newCachedStore(t)
	ctx := context.Background()
	m := put(t, st, "k", "v1", PutOptions{})
	if got, err := get(t, st, "k"); err != nil || got != "v1" || f.count("GetObject") != 0 {
		t.Errorf("GET after PUT: got %q, %v, %d S3 GETs, want v1 from the cache", got, err, f.count("GetObject"))
	}
	if _, err := st.Put(ctx, "k", strings.NewReader("v2"), 2, PutOptions{IfMatch: `"stale"`}); !errors.Is(err, ErrPrecondition) {
		t.Fatalf("conditional write: got %v", err)
	}
	if _, _, _, _ = st.cache.get("k", st.now()); st.cache.hits.Load() != 1 {
		t.Error("a failed conditional write left the key cached")
	}
	put(t, st, "k", "v3", PutOptions{IfMatch: m.ETag})
	if got, _ := get(t, st, "k"); got != "v3" {
		t.Errorf("after overwrite: got %q, want v3", got)
	}
	if err := st.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, st, "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after DELETE: got %v, want ErrNotFound", err)
	}
}

func TestCacheConcurrentMissesShareOneGet(t *testing.T) {
	st, f := newCachedStore(t)
	f.objects[valueName("k")] = fakeObject{body: []byte("shared"), etag: `"e"`}
	release := make(chan struct{})
	f.hook = func(op, key string) error {
		if op == "GetObject" {
			<-release
		}
		return nil
	}
	const n = 32
	var wg sync.WaitGroup
	got := make([]string, n)
	for i := range n {
		wg.Go(func() { got[i], _ = get(t, st, "k") })
	}
	for st.cache.misses.Load() < n { // every reader has missed and joined the one fetch
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if calls := f.count("GetObject"); calls != 1 {
		t.Errorf("S3 GETs for %d concurrent misses: got %d, want 1", n, calls)
	}
	for i, v := range got {
		if v != "shared" {
			t.Fatalf("reader %d: got %q, want shared", i, v)
		}
	}
}

func TestCacheNeverServesAReplacedValue(t *testing.T) {
	c := newCache(1<<20, 0)
	now := time.Now()
	_, old, leader, gen := c.get("k", now) // a GET misses and starts fetching the old value from S3
	if !leader {
		t.Fatal("the first miss did not lead a fetch")
	}
	c.put("k", entry("k", "new")) // meanwhile a PUT completes
	if e, f, _, _ := c.get("k", now); e == nil || string(e.value) != "new" || f == old {
		t.Errorf("GET after the PUT: got entry %v, joined the old fetch %v; want the new value", e, f == old)
	}
	old.entry = entry("k", "old") // the old fetch returns now
	c.finish("k", old, gen)
	if e, _, _, _ := c.get("k", now); e == nil || string(e.value) != "new" {
		t.Errorf("after the old fetch finished: got %v, want the new value", e)
	}
	c.put("k", nil) // a DELETE while another fetch is under way
	_, f, _, gen := c.get("k", now)
	c.put("k", nil)
	f.entry = entry("k", "deleted")
	c.finish("k", f, gen)
	if e, _, _, _ := c.get("k", now); e != nil {
		t.Errorf("after a delete raced a fetch: got %q cached, want nothing", e.value)
	}
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
					st.Delete(context.Background(), key)
				default:
					get(t, st, key)
				}
			}
		})
	}
	wg.Wait()
	used, items := st.cache.stats()
	var sum int64
	for el := st.cache.ll.Front(); el != nil; el = el.Next() {
		sum += entrySize(el.Value.(*cacheEntry))
	}
	if used != sum || used > 200 || items != len(st.cache.items) {
		t.Errorf("after concurrent use: %d bytes counted, %d held, %d items, %d in the map", used, sum, items, len(st.cache.items))
	}
}

func TestVersionsAcceptance(t *testing.T) {
	fake := newStore(newFakeS3(), "test", time.Second, nil)
	if err := fake.SetupVersioning(context.Background(), true); err != nil || !fake.versioned {
		t.Fatalf("enabling versioning on the fake: %v", err)
	}
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
				want := written[2-i]
				if v.Version != want.Version || v.ETag != want.ETag || v.Latest != (i == 0) || v.Deleted {
					t.Errorf("version %d: got %+v, want %s newest first, latest only first", i, v, want.Version)
				}
			}
			for i, v := range []string{"one", "two", "three"} {
				body, _, err := st.Get(ctx, k, written[i].Version)
				if err != nil {
					t.Fatalf("get version %d: %v", i, err)
				}
				got, _ := io.ReadAll(body)
				body.Close()
				if string(got) != v {
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
			if err := st.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
			if _, err := get(t, st, k); !errors.Is(err, ErrNotFound) {
				t.Errorf("after DELETE: got %v, want ErrNotFound", err)
			}
			vs, _, _ = st.Versions(ctx, k, "", 10)
			if len(vs) != 4 || !vs[0].Deleted || !vs[0].Latest {
				t.Fatalf("after DELETE: got %+v, want a delete marker on top of 3 versions", vs)
			}
			if err := st.DeleteVersion(ctx, k, written[0].Version); err != nil {
				t.Fatalf("delete version: %v", err)
			}
			if _, _, err := st.Get(ctx, k, written[0].Version); !errors.Is(err, ErrNotFound) {
				t.Errorf("deleted version: got %v, want ErrNotFound", err)
			}
			if err := st.DeleteVersion(ctx, k, written[0].Version); !errors.Is(err, ErrNotFound) {
				t.Errorf("deleting it again: got %v, want ErrNotFound", err)
			}
			if _, _, err := st.Get(ctx, k, "abc"); !errors.Is(err, ErrBadVersion) {
				t.Errorf("malformed version: got %v, want ErrBadVersion", err)
			}
			if _, err := st.Head(ctx, k, vs[0].Version); !errors.Is(err, ErrNotFound) {
				t.Errorf("HEAD of the delete marker by id: got %v, want ErrNotFound", err)
			}
			if err := st.DeleteVersion(ctx, k, vs[0].Version); err != nil { // removing the marker restores "three"
				t.Fatalf("deleting the delete marker: %v", err)
			}
			if got, err := get(t, st, k); err != nil || got != "three" {
				t.Errorf("after removing the marker: got %q, %v, want three", got, err)
			}
		})
	}
}

func TestSweepVersionedKeepsOlderVersionsBuried(t *testing.T) {
	st, f, c := newFakeStore(t)
	if err := st.SetupVersioning(context.Background(), true); err != nil {
		t.Fatal(err)
	}
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
	if len(vs) != 2 || !vs[0].Deleted || vs[1].Version != old.Version {
		t.Errorf("history: got %+v, want a delete marker over the older version", vs)
	}
	if _, err := f.version(valueName("k"), temp.Version, false); err == nil {
		t.Error("the expired version is still stored")
	}
	body, _, err := st.Get(context.Background(), "k", old.Version)
	if err != nil {
		t.Fatalf("older version: %v", err)
	}
	body.Close()
}
