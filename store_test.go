package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// skipped counts the tests that skipped for want of an S3, for the line TestMain prints.
var skipped atomic.Int64

// TestMain says how many tests skipped for want of an S3. go test shows a passing package's output only with
// -v, so the line also goes to the terminal, when there is one.
func TestMain(m *testing.M) {
	code := m.Run()
	if n := skipped.Load(); n > 0 {
		reportSkips(fmt.Sprintf("kv: %d tests skipped their real-S3 half: set S3_ENDPOINT, S3_BUCKET, "+
			"S3_ACCESS_KEY and S3_SECRET_KEY to run them (see README, Tests)\n", n))
	}
	os.Exit(code)
}

func reportSkips(line string) {
	fmt.Print(line)
	if st, err := os.Stdout.Stat(); testing.Verbose() || err != nil || st.Mode()&os.ModeCharDevice != 0 {
		return
	}
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		fmt.Fprint(tty, line)
		tty.Close()
	}
}

// fakeS3 is an in-memory S3 bucket with the semantics the store relies on: conditional PutObject, If-Match on
// deletes (as AWS honours it, or ignored as MinIO does), typed not-found errors, sorted listing, versioning,
// and MinIO's answers for a missing bucket (a bare 404 on HEAD, NoSuchBucket elsewhere).
type fakeS3 struct {
	mu               sync.Mutex
	objects          map[string]fakeObject   // the current version of each object
	history          map[string][]fakeObject // with versioning: every version and delete marker, oldest first
	versioned        bool
	ignoreDeleteETag bool // as MinIO: If-Match on a delete is ignored
	truncate         int  // > 0: a GET's body breaks after that many bytes
	noBucket         bool
	seq, maxList     int // maxList: the most objects one LIST asked for
	calls            map[string]int
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

func newFakeS3() *fakeS3 {
	return &fakeS3{objects: map[string]fakeObject{}, history: map[string][]fakeObject{}, calls: map[string]int{}}
}

// apiError is an S3 error as the SDK returns it.
type apiError struct{ code string }

func (e apiError) Error() string     { return "api error " + e.code }
func (e apiError) ErrorCode() string { return e.code }

// call counts a call, runs before, and fails it as S3 would when the bucket is gone (a HEAD's 404 has no code)
// or as the SDK does when ctx has ended; done runs after once the call has done its work.
func (f *fakeS3) call(ctx context.Context, op, key string) (done func(), err error) {
	f.mu.Lock()
	f.calls[op]++
	before, after, noBucket := f.before, f.after, f.noBucket
	f.mu.Unlock()
	if before != nil {
		err = before(op, key)
	}
	switch {
	case err != nil:
	case ctx.Err() != nil:
		err = fmt.Errorf("operation error S3: %s: %w", op, ctx.Err())
	case noBucket && (op == "HeadObject" || op == "HeadBucket"):
		err = apiError{"NotFound"}
	case noBucket && op != "CreateBucket":
		err = apiError{"NoSuchBucket"}
	}
	return func() {
		if after != nil {
			after(op, key)
		}
	}, err
}

// hooks sets before and after (either may be nil).
func (f *fakeS3) hooks(before func(op, key string) error, after func(op, key string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.before, f.after = before, after
}

func (f *fakeS3) count(op string) int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls[op] }

// stamp gives a new version its id and a strictly later time (locked).
func (f *fakeS3) stamp(o *fakeObject) {
	f.seq++
	o.modified = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(f.seq) * time.Millisecond)
	if f.versioned {
		o.version = fmt.Sprintf("v%04d", f.seq)
	}
}

// version finds key's version id as MinIO answers: a malformed id is InvalidArgument (a bare 400 for HEAD),
// an unknown one NoSuchVersion (NotFound for HEAD), a delete marker MethodNotAllowed (locked).
func (f *fakeS3) version(key, id string, head bool) (fakeObject, error) {
	_, err := fmt.Sscanf(id, "v%d", new(int))
	switch {
	case err != nil && head:
		return fakeObject{}, apiError{"BadRequest"}
	case err != nil:
		return fakeObject{}, apiError{"InvalidArgument"}
	}
	for _, o := range f.history[key] {
		if o.version == id && o.marker {
			return o, apiError{"MethodNotAllowed"}
		} else if o.version == id {
			return o, nil
		}
	}
	if head {
		return fakeObject{}, apiError{"NotFound"}
	}
	return fakeObject{}, apiError{"NoSuchVersion"}
}

func (f *fakeS3) PutObject(ctx context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput,
	error) {
	done, err := f.call(ctx, "PutObject", *in.Key)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(in.Body)
	if err != nil || int64(len(body)) != *in.ContentLength {
		return nil, fmt.Errorf("fake: body of %d bytes, ContentLength %d: %v", len(body), *in.ContentLength, err)
	}
	f.mu.Lock()
	cur, exists := f.objects[*in.Key]
	switch {
	case in.IfNoneMatch != nil && exists, in.IfMatch != nil && exists && *in.IfMatch != cur.etag:
		err = apiError{"PreconditionFailed"}
	case in.IfMatch != nil && !exists:
		err = &types.NoSuchKey{}
	}
	sum := md5.Sum(body)
	o := fakeObject{body: body, etag: `"` + hex.EncodeToString(sum[:]) + `"`, ctype: aws.ToString(in.ContentType),
		meta: in.Metadata}
	if err == nil {
		f.stamp(&o)
		f.objects[*in.Key] = o
	}
	if err == nil && f.versioned {
		f.history[*in.Key] = append(f.history[*in.Key], o)
	}
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	done()
	return &s3.PutObjectOutput{ETag: &o.etag, VersionId: nonEmpty(o.version)}, nil
}

func (f *fakeS3) object(ctx context.Context, op, key string, version *string) (fakeObject, error) {
	done, err := f.call(ctx, op, key)
	if err != nil {
		return fakeObject{}, err
	}
	defer done()
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objects[key]
	switch {
	case version != nil:
		return f.version(key, *version, op == "HeadObject")
	case !ok && op == "HeadObject":
		return o, &types.NotFound{}
	case !ok:
		return o, &types.NoSuchKey{}
	}
	return o, nil
}

func (f *fakeS3) GetObject(ctx context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput,
	error) {
	o, err := f.object(ctx, "GetObject", *in.Key, in.VersionId)
	if err != nil {
		return nil, err
	}
	var body io.Reader = bytes.NewReader(o.body)
	if f.truncate > 0 {
		body = io.MultiReader(bytes.NewReader(o.body[:f.truncate]), iotest.ErrReader(errors.New("connection reset")))
	}
	return &s3.GetObjectOutput{Body: io.NopCloser(body), ContentLength: aws.Int64(int64(len(o.body))),
		ETag: &o.etag, ContentType: &o.ctype, LastModified: &o.modified, Metadata: o.meta,
		VersionId: nonEmpty(o.version)}, nil
}

func (f *fakeS3) HeadObject(ctx context.Context, in *s3.HeadObjectInput, _ ...func(*s3.Options)) (*s3.HeadObjectOutput,
	error) {
	o, err := f.object(ctx, "HeadObject", *in.Key, in.VersionId)
	if err != nil {
		return nil, err
	}
	return &s3.HeadObjectOutput{ContentLength: aws.Int64(int64(len(o.body))), ETag: &o.etag, ContentType: &o.ctype,
		LastModified: &o.modified, Metadata: o.meta, VersionId: nonEmpty(o.version)}, nil
}

func (f *fakeS3) DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, _ ...func(*s3.Options)) (
	*s3.DeleteObjectOutput, error) {
	done, err := f.call(ctx, "DeleteObject", *in.Key)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	key := *in.Key
	o, exists := f.objects[key]
	switch {
	case in.IfMatch != nil && f.ignoreDeleteETag:
	case in.IfMatch != nil && !exists:
		return nil, apiError{"NoSuchKey"}
	case in.IfMatch != nil && *in.IfMatch != o.etag:
		return nil, apiError{"PreconditionFailed"}
	}
	defer done()
	if in.VersionId != nil { // for good; S3 does not mind an unknown version
		if _, err := f.version(key, *in.VersionId, false); errorCode(err) == "InvalidArgument" {
			return nil, err
		}
		h := slices.DeleteFunc(f.history[key], func(o fakeObject) bool { return o.version == *in.VersionId })
		f.history[key] = h
		delete(f.objects, key)
		if len(h) > 0 && !h[len(h)-1].marker {
			f.objects[key] = h[len(h)-1]
		}
		return &s3.DeleteObjectOutput{}, nil
	}
	delete(f.objects, key)
	if !f.versioned {
		return &s3.DeleteObjectOutput{}, nil
	}
	m := fakeObject{marker: true}
	f.stamp(&m)
	f.history[key] = append(f.history[key], m)
	return &s3.DeleteObjectOutput{VersionId: &m.version, DeleteMarker: aws.Bool(true)}, nil
}

func (f *fakeS3) PutBucketVersioning(ctx context.Context, in *s3.PutBucketVersioningInput,
	_ ...func(*s3.Options)) (*s3.PutBucketVersioningOutput, error) {
	_, err := f.call(ctx, "PutBucketVersioning", "")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.versioned = err == nil && in.VersioningConfiguration.Status == types.BucketVersioningStatusEnabled
	return &s3.PutBucketVersioningOutput{}, err
}

func (f *fakeS3) GetBucketVersioning(ctx context.Context, in *s3.GetBucketVersioningInput,
	_ ...func(*s3.Options)) (*s3.GetBucketVersioningOutput, error) {
	_, err := f.call(ctx, "GetBucketVersioning", "")
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &s3.GetBucketVersioningOutput{}
	if f.versioned {
		out.Status = types.BucketVersioningStatusEnabled
	}
	return out, err
}

// ListObjectVersions lists keys in order, each key's versions newest first, resuming after the markers.
func (f *fakeS3) ListObjectVersions(ctx context.Context, in *s3.ListObjectVersionsInput,
	_ ...func(*s3.Options)) (*s3.ListObjectVersionsOutput, error) {
	if _, err := f.call(ctx, "ListObjectVersions", aws.ToString(in.Prefix)); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &s3.ListObjectVersionsOutput{}
	skipping, n := in.VersionIdMarker != nil, 0
	var keys []string
	for k := range f.history {
		if strings.HasPrefix(k, aws.ToString(in.Prefix)) && k >= aws.ToString(in.KeyMarker) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		h := f.history[k]
		for i := len(h) - 1; i >= 0; i-- {
			o, latest := h[i], aws.Bool(i == len(h)-1)
			if skipping && k == aws.ToString(in.KeyMarker) {
				skipping = o.version != *in.VersionIdMarker
				continue
			}
			if n == int(aws.ToInt32(in.MaxKeys)) {
				out.IsTruncated = aws.Bool(true)
				return out, nil
			}
			n++
			if o.marker {
				out.DeleteMarkers = append(out.DeleteMarkers, types.DeleteMarkerEntry{Key: aws.String(k),
					VersionId: aws.String(o.version), IsLatest: latest, LastModified: aws.Time(o.modified)})
			} else {
				out.Versions = append(out.Versions, types.ObjectVersion{Key: aws.String(k), VersionId: &o.version,
					IsLatest: latest, LastModified: &o.modified, ETag: &o.etag, Size: aws.Int64(int64(len(o.body)))})
			}
		}
	}
	return out, nil
}

func (f *fakeS3) ListObjectsV2(ctx context.Context, in *s3.ListObjectsV2Input, _ ...func(*s3.Options)) (
	*s3.ListObjectsV2Output, error) {
	if _, err := f.call(ctx, "ListObjectsV2", aws.ToString(in.Prefix)); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for _, k := range slices.Sorted(maps.Keys(f.objects)) {
		if strings.HasPrefix(k, aws.ToString(in.Prefix)) && k > aws.ToString(in.StartAfter) {
			names = append(names, k)
		}
	}
	limit := int(aws.ToInt32(in.MaxKeys))
	f.maxList = max(f.maxList, limit)
	out := &s3.ListObjectsV2Output{IsTruncated: aws.Bool(len(names) > limit)}
	for _, k := range names[:min(limit, len(names))] {
		out.Contents = append(out.Contents, types.Object{Key: aws.String(k)})
	}
	return out, nil
}

func (f *fakeS3) HeadBucket(ctx context.Context, in *s3.HeadBucketInput, _ ...func(*s3.Options)) (*s3.HeadBucketOutput,
	error) {
	_, err := f.call(ctx, "HeadBucket", "")
	return &s3.HeadBucketOutput{}, err
}

func (f *fakeS3) CreateBucket(ctx context.Context, in *s3.CreateBucketInput, _ ...func(*s3.Options)) (
	*s3.CreateBucketOutput, error) {
	_, err := f.call(ctx, "CreateBucket", "")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noBucket = f.noBucket && err != nil
	return &s3.CreateBucketOutput{}, err
}

// present reports whether the fake bucket holds an object.
func (f *fakeS3) present(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.objects[name]
	return ok
}

// indexEntries returns the TTL index entries in the fake bucket.
func (f *fakeS3) indexEntries() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.DeleteFunc(slices.Sorted(maps.Keys(f.objects)), func(k string) bool {
		return !strings.HasPrefix(k, indexPrefix)
	})
}

// clock is a settable time source for TTL tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

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

func newCachedStore(t *testing.T) (*Store, *fakeS3, *clock) {
	st, f, c := newFakeStore(t)
	st.cache = newCache(1<<20, 0)
	return st, f, c
}

// versioned turns versioning on for a fake store.
func versioned(st *Store, f *fakeS3) {
	f.versioned, st.versioned = true, true
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

func sweepNow(t *testing.T, st *Store) int {
	t.Helper()
	n, err := st.Sweep(context.Background())
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	return n
}

func listKeys(t *testing.T, st *Store, prefix string) []string {
	t.Helper()
	keys, _, err := st.List(context.Background(), prefix, "", 1000)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	return keys
}

// stores returns the fake store and, when S3_ENDPOINT is set, a store on that S3, so the fake cannot drift.
// versioned: a bucket of its own ("-versioned") with versioning on.
func stores(t *testing.T, versioning bool) map[string]*Store {
	t.Helper()
	fake, f, _ := newFakeStore(t)
	fake.now = time.Now
	if versioning {
		versioned(fake, f)
	}
	impls := map[string]*Store{"fake": fake}
	switch {
	case os.Getenv("S3_ENDPOINT") == "" && os.Getenv("CI") != "":
		t.Fatal("CI is set but S3_ENDPOINT is not: the real-S3 half of this test must run there")
	case os.Getenv("S3_ENDPOINT") == "":
		skipped.Add(1)
		t.Log("S3_ENDPOINT is unset: the real-S3 half of this test is skipped")
		return impls
	}
	bucket := cmp.Or(os.Getenv("S3_BUCKET"), "kv-test")
	if versioning {
		bucket += "-versioned"
	}
	env := func(k string) string { return cmp.Or(map[string]string{"S3_BUCKET": bucket}[k], os.Getenv(k)) }
	cfg, err := loadConfig(env)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	client, err := newS3Client(context.Background(), cfg, newMetrics(nil))
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(client, cfg.Bucket, cfg.S3Timeout, nil)
	if err := st.Setup(context.Background(), true, versioning); err != nil {
		t.Fatalf("bucket %q on %s: %v", cfg.Bucket, cfg.Endpoint, err)
	}
	impls["s3"] = st
	return impls
}

func TestObjectPath(t *testing.T) {
	for key, want := range map[string]string{"a": "a!", "a/b": "a/b!", "!": "!!!", "!x/y!/!!": "!!x/y!!/!!!!!",
		"ünï/cödé": "ünï/cödé!"} {
		if got := objectPath(key, false); got != want {
			t.Errorf("objectPath(%q): got %q, want %q", key, got, want)
		}
		if got, ok := keyOf(want); !ok || got != key {
			t.Errorf("keyOf(%q): got %q, %v, want %q", want, got, ok, key)
		}
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

// TestErrorsKeepTheirCause: the sentinel decides the status, the S3 error stays for the log, the operation
// is named, and a bare 400 means a bad key only for a key's own HEAD.
func TestErrorsKeepTheirCause(t *testing.T) {
	tests := []struct {
		code, version string
		want          error
	}{
		{"NoSuchKey", "", ErrNotFound}, {"NotFound", "", ErrNotFound}, {"NoSuchVersion", "v1", ErrNotFound},
		{"MethodNotAllowed", "v1", ErrNotFound}, {"PreconditionFailed", "", ErrPrecondition},
		{"ConditionalRequestConflict", "", ErrPrecondition}, {"KeyTooLongError", "", ErrBadKey},
		{"XMinioInvalidObjectName", "", ErrBadKey}, {"BadRequest", "", ErrBadKey}, {"BadRequest", "v1", ErrBadVersion},
		{"InvalidArgument", "v1", ErrBadVersion}, {"NoSuchBucket", "", ErrNoBucket}, {"Forbidden", "", ErrDenied},
		{"ExistingObjectIsDirectory", "", ErrBadKey},
		{"InvalidAccessKeyId", "", ErrDenied}, {"SignatureDoesNotMatch", "", ErrDenied},
	}
	for _, tt := range tests {
		cause := fmt.Errorf("operation error S3: HeadObject: %w", apiError{tt.code})
		got := failObject("head", tt.version, cause)
		if !errors.Is(got, tt.want) || !errors.Is(got, cause) || !strings.HasPrefix(got.Error(), "s3 head: ") {
			t.Errorf("%s (version %q): got %v, want %v wrapping the S3 error, naming the operation", tt.code,
				tt.version, got, tt.want)
		}
	}
	if got := fail("head bucket", apiError{"BadRequest"}); errors.Is(got, ErrBadKey) {
		t.Errorf("a HeadBucket 400: got %v, want no key sentinel (a wrong region looks like that)", got)
	}
	if fail("get", nil) != nil || failObject("get", "", nil) != nil {
		t.Error("fail(nil) is not nil")
	}
}

func TestStoreAcceptance(t *testing.T) {
	for name, st := range stores(t, false) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			p := keyPrefix(t)
			if _, err := get(t, st, p+"missing"); !errors.Is(err, ErrNotFound) {
				t.Errorf("get missing: got %v, want ErrNotFound", err)
			}
			if _, err := st.Head(ctx, p+"missing", ""); !errors.Is(err, ErrNotFound) {
				t.Errorf("head missing: got %v, want ErrNotFound", err)
			}
			for range 2 { // idempotent: S3 cannot tell whether there was a value
				if err := st.Delete(ctx, p+"missing", "", ""); err != nil {
					t.Errorf("delete missing: got %v, want nil", err)
				}
			}
			m := put(t, st, p+"a", "one", PutOptions{ContentType: "text/plain", IfNoneMatch: true})
			refused := []struct {
				key string
				o   PutOptions
			}{
				{p + "a", PutOptions{IfNoneMatch: true}}, {p + "a", PutOptions{IfMatch: `"0123"`}},
				{p + "a", PutOptions{IfMatch: "W/" + m.ETag}}, {p + "none", PutOptions{IfMatch: m.ETag}},
				{p + "none", PutOptions{IfMatch: "*"}},
			}
			for _, r := range refused {
				if _, err := st.Put(ctx, r.key, strings.NewReader("two"), 3, r.o); !errors.Is(err, ErrPrecondition) {
					t.Errorf("PUT %+v: got %v, want ErrPrecondition", r.o, err)
				}
				if r.o.IfMatch == "" {
					continue
				}
				if err := st.Delete(ctx, r.key, "", r.o.IfMatch); !errors.Is(err, ErrPrecondition) {
					t.Errorf("DELETE If-Match %s: got %v, want ErrPrecondition", r.o.IfMatch, err)
				}
			}
			var wins atomic.Int64 // of writers racing with one If-Match, exactly one wins
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					_, err := st.Put(ctx, p+"a", strings.NewReader(strconv.Itoa(i)), 1, PutOptions{IfMatch: m.ETag})
					if err == nil {
						wins.Add(1)
					} else if !errors.Is(err, ErrPrecondition) {
						t.Errorf("a racing If-Match writer: got %v, want success or ErrPrecondition", err)
					}
				})
			}
			wg.Wait()
			if wins.Load() != 1 {
				t.Errorf("writers racing with one If-Match: %d won, want 1", wins.Load())
			}
			m, _ = st.Head(ctx, p+"a", "")
			m2 := put(t, st, p+"a", "two", PutOptions{IfMatch: `"0123", ` + m.ETag})
			if got, err := get(t, st, p+"a"); err != nil || got != "two" {
				t.Errorf("get after If-Match write: got %q, %v, want two", got, err)
			}
			if h, err := st.Head(ctx, p+"a", ""); err != nil || h.ETag != m2.ETag || h.Size != 3 {
				t.Errorf("head: got %+v, %v, want etag %s, size 3", h, err, m2.ETag)
			}
			for _, k := range []string{"a/b", "!x", "a-z", "b"} {
				put(t, st, p+k, "v", PutOptions{})
			}
			want := []string{p + "!x", p + "a", p + "a-z", p + "a/b", p + "b"}
			if all := walk(t, st, p, 2); !slices.Equal(all, want) {
				t.Errorf("list pages: got %q, want %q", all, want)
			}
			if keys := listKeys(t, st, p+"a/"); !slices.Equal(keys, []string{p + "a/b"}) {
				t.Errorf("list prefix a/: got %q, want only %q", keys, p+"a/b")
			}
			if err := st.Delete(ctx, p+"a", "", m2.ETag); err != nil {
				t.Errorf("DELETE If-Match the current ETag: %v", err)
			}
			for _, k := range want[2:] {
				if err := st.Delete(ctx, k, "", "*"); err != nil {
					t.Errorf("DELETE If-Match * of %q: %v", k, err)
				}
			}
			if keys := listKeys(t, st, p); !slices.Equal(keys, want[:1]) {
				t.Errorf("list after deletes: got %q, want %q", keys, want[:1])
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
	c.add(10*time.Second - time.Nanosecond)
	if got, err := get(t, st, "k"); err != nil || got != "v" || !slices.Equal(listKeys(t, st, ""), []string{"k"}) {
		t.Errorf("1ns before expiry: got %q, %v, want v, listed", got, err)
	}
	c.add(time.Nanosecond)
	if _, err := get(t, st, "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("at expiry: got %v, want ErrNotFound", err)
	}
	if _, err := st.Head(ctx, "k", ""); !errors.Is(err, ErrNotFound) || len(listKeys(t, st, "")) != 0 {
		t.Errorf("head at expiry: got %v, listed %q, want ErrNotFound and not listed", err, listKeys(t, st, ""))
	}
	if _, err := st.Put(ctx, "k", strings.NewReader("x"), 1, PutOptions{IfMatch: m.ETag}); !errors.Is(err,
		ErrPrecondition) {
		t.Errorf("If-Match on an expired value: got %v, want ErrPrecondition", err)
	}
	put(t, st, "k", "fresh", PutOptions{IfNoneMatch: true}) // an expired value counts as absent
	c.add(time.Hour)
	if got, err := get(t, st, "k"); err != nil || got != "fresh" {
		t.Errorf("a PUT without ttl over a TTL value: got %q, %v, want fresh for good", got, err)
	}
}

// TestIfNoneMatchOverAnExpiredValue: the key is absent whether or not the sweep removes the expired value
// between kv's HEAD and its write.
func TestIfNoneMatchOverAnExpiredValue(t *testing.T) {
	st, f, c := newFakeStore(t)
	put(t, st, "k", "old", PutOptions{TTL: time.Second})
	c.add(2 * time.Second)
	f.hooks(func(op, key string) error {
		if op == "DeleteObject" {
			f.hooks(nil, nil)
			sweepNow(t, st) // the sweep gets there first
		}
		return nil
	}, nil)
	put(t, st, "k", "new", PutOptions{IfNoneMatch: true})
	if got, err := get(t, st, "k"); err != nil || got != "new" {
		t.Errorf("after If-None-Match: got %q, %v, want new", got, err)
	}
}

func TestSweep(t *testing.T) {
	st, f, c := newFakeStore(t)
	put(t, st, "gone", "v", PutOptions{TTL: time.Second})
	put(t, st, "later", "v", PutOptions{TTL: time.Hour})
	put(t, st, "rewritten", "v", PutOptions{TTL: time.Second})
	put(t, st, "rewritten", "permanent", PutOptions{})
	put(t, st, "deleted", "v", PutOptions{TTL: time.Second})
	if err := st.Delete(context.Background(), "deleted", "", ""); err != nil {
		t.Fatal(err)
	}
	put(t, st, "forever", "v", PutOptions{})
	c.add(2 * time.Second)
	if n := sweepNow(t, st); n != 1 {
		t.Fatalf("sweep: got %d deleted, want 1", n)
	}
	for key, want := range map[string]bool{"gone": false, "later": true, "rewritten": true, "forever": true} {
		if f.present(valueName(key)) != want {
			t.Errorf("object of %q present: got %v, want %v", key, !want, want)
		}
	}
	if index := f.indexEntries(); len(index) != 1 || !strings.HasSuffix(index[0], "/later!") {
		t.Errorf("index after sweep: got %q, want only the entry of later", index)
	}
	if n := sweepNow(t, st); n != 0 {
		t.Errorf("second sweep: got %d deleted, want nothing to do", n)
	}
	// An entry is due one second early, but its value stays until it has expired.
	m := put(t, st, "soon", "v", PutOptions{TTL: 1500 * time.Millisecond})
	c.add(time.Second)
	if n := sweepNow(t, st); n != 0 || len(f.indexEntries()) != 2 {
		t.Errorf("before expiry: %d deleted, entries %q, want the value and its entry kept", n, f.indexEntries())
	}
	c.add(m.ExpiresAt.Sub(c.now()) + time.Millisecond)
	if n := sweepNow(t, st); n != 1 {
		t.Errorf("just after expiry, in the second before its entry's: got %d deleted, want 1", n)
	}
}

// TestSweepPagesInBatches: a backlog of 1,500 due keys is swept a page at a time, in bounded memory (no LIST
// over a page), with one HEAD per due key and none for the others.
func TestSweepPagesInBatches(t *testing.T) {
	for _, versioning := range []bool{false, true} {
		t.Run(fmt.Sprint("versioned=", versioning), func(t *testing.T) {
			st, f, c := newFakeStore(t)
			if versioning {
				versioned(st, f)
			}
			for i := range 1500 {
				put(t, st, fmt.Sprintf("due/%04d", i), "v", PutOptions{TTL: time.Second})
			}
			put(t, st, "due/0007", "rewritten for good", PutOptions{})
			put(t, st, "due/0008", "rewritten, later", PutOptions{TTL: time.Hour})
			for i := range 50 {
				put(t, st, fmt.Sprintf("live/%02d", i), "v", PutOptions{TTL: time.Hour})
				put(t, st, fmt.Sprintf("permanent/%02d", i), "v", PutOptions{})
			}
			c.add(3 * time.Second)
			heads := f.count("HeadObject")
			if n := sweepNow(t, st); n != 1498 {
				t.Fatalf("sweep: got %d deleted, want 1498", n)
			}
			if got := f.count("HeadObject") - heads; got != 1500 {
				t.Errorf("HEADs: got %d, want one per due key (1500)", got)
			}
			if f.maxList > sweepPage {
				t.Errorf("largest LIST %d: want at most %d", f.maxList, sweepPage)
			}
			for key, want := range map[string]string{"due/0007": "rewritten for good", "due/0008": "rewritten, later"} {
				if got, err := get(t, st, key); err != nil || got != want {
					t.Errorf("%s: got %q, %v, want %q", key, got, err, want)
				}
			}
			if n := len(f.indexEntries()); n != 51 || len(listKeys(t, st, "due/")) != 2 {
				t.Errorf("after the sweep: %d index entries, %q listed, want 51 and the two rewrites", n,
					listKeys(t, st, "due/"))
			}
			if vs, _, _ := st.Versions(context.Background(), "due/0009", "", 10); versioning && (len(vs) != 2 ||
				!vs[0].Deleted) {
				t.Errorf("history of an expired key: got %+v, want the value under a delete marker", vs)
			}
		})
	}
}

// TestSweepRacingAWrite: a client writes the key between the sweep's HEAD and its delete. S3 spares a write
// of other bytes where it honours the ETag; a write of the same bytes has the same ETag, so only a versioned
// bucket lets the sweep tell it apart (it removes the marker it laid). The cache never serves what S3 lost.
func TestSweepRacingAWrite(t *testing.T) {
	tests := []struct {
		name                 string
		versioned, ignoreTag bool
		value, want          string
	}{
		{"other bytes, ETag honoured", false, false, "new", "new"},
		{"other bytes, ETag ignored (MinIO)", false, true, "new", ""},
		{"other bytes, ETag ignored, versioned", true, true, "new", "new"},
		{"same bytes, versioned", true, false, "old", "old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, f, c := newCachedStore(t)
			if tt.versioned {
				versioned(st, f)
			}
			f.ignoreDeleteETag = tt.ignoreTag
			put(t, st, "k", "old", PutOptions{TTL: time.Second})
			c.add(2 * time.Second)
			f.hooks(func(op, key string) error {
				if op == "DeleteObject" {
					f.hooks(nil, nil)
					put(t, st, "k", tt.value, PutOptions{TTL: time.Hour})
					get(t, st, "k") // a GET between the write and the delete fills the cache
				}
				return nil
			}, nil)
			sweepNow(t, st)
			got, err := get(t, st, "k")
			if got != tt.want || (tt.want == "") != errors.Is(err, ErrNotFound) {
				t.Errorf("after the sweep: got %q, %v, want %q", got, err, tt.want)
			}
			if tt.want != "" && len(f.indexEntries()) != 1 {
				t.Errorf("index: got %q, want the write's own entry only", f.indexEntries())
			}
		})
	}
}

// TestTTLWriteNeedsItsEntry: a TTL write whose index entry S3 refuses fails and stores nothing, since nothing
// would reclaim the value.
func TestTTLWriteNeedsItsEntry(t *testing.T) {
	st, f, _ := newFakeStore(t)
	f.hooks(func(op, key string) error {
		if op == "PutObject" && strings.HasPrefix(key, indexPrefix) {
			return errors.New("connection reset")
		}
		return nil
	}, nil)
	_, err := st.Put(context.Background(), "k", strings.NewReader("v"), 1, PutOptions{TTL: time.Minute})
	if err == nil || f.present(valueName("k")) {
		t.Errorf("got %v, value stored %v; want an error and nothing stored", err, f.present(valueName("k")))
	}
}

// TestSweepKeepsWhatItCouldNotFinish: when a HEAD or a delete fails, the entry stays, the sweep says so,
// and the next sweep finishes the work.
func TestSweepKeepsWhatItCouldNotFinish(t *testing.T) {
	for _, fault := range []string{"HeadObject v/", "DeleteObject v/", "DeleteObject t/"} {
		t.Run(fault, func(t *testing.T) {
			st, f, c := newFakeStore(t)
			put(t, st, "k", "v", PutOptions{TTL: time.Second})
			c.add(2 * time.Second)
			f.hooks(func(op, key string) error {
				if op+" "+key[:2] == fault {
					return errors.New("connection reset")
				}
				return nil
			}, nil)
			if _, err := st.Sweep(context.Background()); err == nil || len(f.indexEntries()) != 1 {
				t.Errorf("got %v and entries %q, want an error and the entry kept", err, f.indexEntries())
			}
			f.hooks(nil, nil)
			sweepNow(t, st)
			if f.present(valueName("k")) || len(f.indexEntries()) != 0 {
				t.Errorf("next sweep: value there %v, entries %q, want both gone", f.present(valueName("k")),
					f.indexEntries())
			}
		})
	}
}

// TestSlowTTLUpload: a value whose upload outlasts its TTL is reclaimed, whether it lands after a sweep has
// dropped its entry (the PUT puts the entry again) or while the sweep drops it (the sweep looks again).
func TestSlowTTLUpload(t *testing.T) {
	for _, landsDuringTheDrop := range []bool{false, true} {
		t.Run(fmt.Sprint("lands during the drop: ", landsDuringTheDrop), func(t *testing.T) {
			st, f, c := newFakeStore(t)
			land, landed := make(chan struct{}), make(chan struct{})
			var once sync.Once
			f.hooks(func(op, key string) error {
				switch {
				case op == "PutObject" && key == valueName("k"):
					once.Do(func() { c.add(2 * time.Second); <-land })
				case op == "DeleteObject" && strings.HasPrefix(key, indexPrefix) && landsDuringTheDrop:
					close(land)
					<-landed
				}
				return nil
			}, nil)
			go func() { defer close(landed); put(t, st, "k", "slow", PutOptions{TTL: time.Second}) }()
			for f.count("PutObject") < 2 { // the entry is in; the value is on its way
				time.Sleep(time.Millisecond)
			}
			sweepNow(t, st) // finds the entry due and no value
			if !landsDuringTheDrop {
				close(land)
			}
			<-landed
			f.hooks(nil, nil)
			if keys := listKeys(t, st, ""); len(keys) != 0 {
				t.Errorf("listed after expiry: %q", keys)
			}
			if n := sweepNow(t, st); n != 1 || f.present(valueName("k")) || len(f.indexEntries()) != 0 {
				t.Errorf("next sweep: %d deleted, value there %v, entries %q, want the value and its entry gone", n,
					f.present(valueName("k")), f.indexEntries())
			}
		})
	}
}

// TestVersionDeleteResurfacesAnExpiredValue: deleting the current version can bring back an older TTL value
// whose entry the sweep dropped while it lay buried; it is expired, so absent, and reclaimed.
func TestVersionDeleteResurfacesAnExpiredValue(t *testing.T) {
	st, f, c := newFakeStore(t)
	versioned(st, f)
	put(t, st, "k", "brief", PutOptions{TTL: time.Second})
	m := put(t, st, "k", "permanent", PutOptions{})
	c.add(2 * time.Second)
	sweepNow(t, st) // the brief value is buried: its entry goes
	if err := st.Delete(context.Background(), "k", m.Version, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, st, "k"); !errors.Is(err, ErrNotFound) || len(listKeys(t, st, "")) != 0 {
		t.Errorf("after the version delete: got %v, listed %q, want ErrNotFound, not listed", err, listKeys(t, st, ""))
	}
	if n := sweepNow(t, st); n != 1 || len(f.indexEntries()) != 0 {
		t.Errorf("sweep: %d deleted, entries %q, want the resurfaced value reclaimed", n, f.indexEntries())
	}
}

// walk lists prefix a page of limit at a time, following the cursors to the end.
func walk(t *testing.T, st *Store, prefix string, limit int) (all []string) {
	t.Helper()
	for after, pages := "", 0; pages < 100; pages++ {
		keys, next, err := st.List(context.Background(), prefix, after, limit)
		if err != nil || len(keys) > limit {
			t.Fatalf("page %d: got %q, %v, want at most %d keys", pages, keys, err, limit)
		}
		all = append(all, keys...)
		if next == "" {
			return all
		}
		after = next
	}
	t.Fatal("a walk that does not end")
	return nil
}

// TestListWalks: a walk through the pages lists every live key once, whatever the page size: not an
// expired one (swept or not), not an object kv did not write.
func TestListWalks(t *testing.T) {
	st, f, c := newFakeStore(t)
	var want []string
	for i := range 30 {
		key := fmt.Sprintf("k/%02d", i)
		if i%3 == 0 {
			want = append(want, key)
			put(t, st, key, "v", PutOptions{})
		} else {
			put(t, st, key, "v", PutOptions{TTL: time.Second})
		}
	}
	for _, name := range []string{"v/k/00", "v/k/05x", "v/k/05!!x", "v/z"} {
		f.objects[name] = fakeObject{}
	}
	c.add(time.Second)
	for _, limit := range []int{1, 2, 4, 100} {
		if all := walk(t, st, "k/", limit); !slices.Equal(all, want) {
			t.Errorf("limit %d: walked %q, want %q", limit, all, want)
		}
	}
}

// TestWritesRacingADelete: the key goes between kv's HEAD and its conditional write or delete.
func TestWritesRacingADelete(t *testing.T) {
	for _, op := range []string{"PutObject", "DeleteObject"} {
		st, f, _ := newFakeStore(t)
		m := put(t, st, "k", "v", PutOptions{})
		f.hooks(func(o, key string) error {
			if o == op {
				f.hooks(nil, nil)
				st.Delete(context.Background(), "k", "", "")
			}
			return nil
		}, nil)
		var err error
		if op == "PutObject" {
			_, err = st.Put(context.Background(), "k", strings.NewReader("x"), 1, PutOptions{IfMatch: m.ETag})
		} else {
			err = st.Delete(context.Background(), "k", "", m.ETag)
		}
		if !errors.Is(err, ErrPrecondition) {
			t.Errorf("If-Match racing a delete, at %s: got %v, want ErrPrecondition", op, err)
		}
	}
}

func TestVersionsAcceptance(t *testing.T) {
	for name, st := range stores(t, true) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			k := keyPrefix(t) + "doc"
			put(t, st, k+"!longer", "another key", PutOptions{}) // shares the prefix of k's object name
			var written []Meta
			for _, v := range []string{"one", "two", "three"} {
				written = append(written, put(t, st, k, v, PutOptions{}))
			}
			vs, next, err := st.Versions(ctx, k, "", 10)
			if err != nil || len(vs) != 3 || next != "" {
				t.Fatalf("versions: got %+v, next %q, %v, want 3 and no next", vs, next, err)
			}
			for i, v := range vs {
				if w := written[2-i]; v.Version != w.Version || v.ETag != w.ETag || v.Latest != (i == 0) || v.Deleted {
					t.Errorf("version %d: got %+v, want %s newest first, latest only first", i, v, w.Version)
				}
			}
			body, _, err := st.Get(ctx, k, written[0].Version)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := io.ReadAll(body); string(got) != "one" {
				t.Errorf("first version: got %q, want one", got)
			}
			body.Close()
			page, next, err := st.Versions(ctx, k, "", 2)
			if err != nil || len(page) != 2 || next != page[1].Version {
				t.Fatalf("page 1: got %d, next %q, %v", len(page), next, err)
			}
			page, next, _ = st.Versions(ctx, k, next, 2)
			if len(page) != 1 || page[0].Version != written[0].Version || next != "" {
				t.Errorf("page 2: got %+v, next %q, want the oldest version and no next", page, next)
			}
			if err := st.Delete(ctx, k, "", written[2].ETag); err != nil { // a conditional delete lays a marker too
				t.Fatal(err)
			}
			vs, _, _ = st.Versions(ctx, k, "", 10)
			if _, err := get(t, st, k); !errors.Is(err, ErrNotFound) || len(vs) != 4 || !vs[0].Deleted {
				t.Fatalf("after DELETE: got %v, history %+v, want ErrNotFound, a marker on top of 3 versions", err, vs)
			}
			for range 2 { // idempotent
				if err := st.Delete(ctx, k, written[0].Version, ""); err != nil {
					t.Fatalf("delete version: %v", err)
				}
			}
			for version, want := range map[string]error{written[0].Version: ErrNotFound, vs[0].Version: ErrNotFound,
				"abc": ErrBadVersion} {
				if _, err := st.Head(ctx, k, version); !errors.Is(err, want) {
					t.Errorf("HEAD of version %q: got %v, want %v", version, err, want)
				}
			}
			if _, _, err := st.Get(ctx, k, "abc"); !errors.Is(err, ErrBadVersion) {
				t.Errorf("GET of a malformed version: got %v, want ErrBadVersion", err)
			}
			if err := st.Delete(ctx, k, vs[0].Version, ""); err != nil { // removing the marker restores "three"
				t.Fatalf("deleting the delete marker: %v", err)
			}
			if got, err := get(t, st, k); err != nil || got != "three" {
				t.Errorf("after removing the marker: got %q, %v, want three", got, err)
			}
			// The sweep judged the older of two writes of the same bytes expired: the marker it lays goes again.
			again := put(t, st, k, "three", PutOptions{})
			if deleted, err := st.reclaim(ctx, k, written[2]); deleted || err != nil || again.ETag != written[2].ETag {
				t.Errorf("reclaiming a value written again since: got %v, %v, want it spared", deleted, err)
			}
			if vs, _, _ := st.Versions(ctx, k, "", 10); vs[0].Version != again.Version || vs[0].Deleted {
				t.Errorf("history: got %+v, want the second write current, no marker on it", vs)
			}
		})
	}
}

func entry(key, value string) *cacheEntry { return &cacheEntry{key: key, value: []byte(value)} }

func TestCacheEvictsLeastRecentlyUsedByBytes(t *testing.T) {
	c := newCache(30, 0) // each entry below is 10 bytes: key 1 + value 9
	now := time.Now()
	for _, k := range []string{"a", "b", "c"} {
		c.fill(entry(k, "123456789"), 0)
	}
	if e, _ := c.get("a", now); e == nil { // a becomes the most recent
		t.Fatal("a is not cached")
	}
	c.fill(entry("d", "123456789"), 0)
	var keys []string
	for el := c.ll.Front(); el != nil; el = el.Next() {
		keys = append(keys, el.Value.(*cacheEntry).key)
	}
	if !slices.Equal(keys, []string{"d", "a", "c"}) || c.used != 30 || c.evictions != 1 {
		t.Errorf("after evicting: got %q, %d bytes, %d evictions, want [d a c] (b was least recently used), 30, 1",
			keys, c.used, c.evictions)
	}
	c.fill(entry("e", strings.Repeat("x", 25)), 0) // 26 bytes: room for nothing else
	if c.used != 26 || c.ll.Len() != 1 {
		t.Errorf("after a large entry: got %d bytes in %d items, want 26 in 1", c.used, c.ll.Len())
	}
	if newCache(0, 0) != nil {
		t.Error("CACHE_MAX_BYTES=0 did not turn the cache off")
	}
	if big := newCache(64<<20, 0); big.fits(cacheMaxItem+1) || !big.fits(cacheMaxItem) || c.fits(31) {
		t.Errorf("fits: values up to %d bytes (and the cache's size), and no larger, should be cached", cacheMaxItem)
	}
}

func TestCacheExpiryAndFreshness(t *testing.T) {
	now := time.Now()
	c := newCache(1<<20, time.Minute)
	e := entry("ttl", "v")
	e.meta.ExpiresAt, e.stored = now.Add(time.Second), now
	c.fill(e, 0)
	if got, _ := c.get("ttl", now.Add(time.Second-1)); got == nil {
		t.Error("1ns before expiry: not served")
	}
	if got, _ := c.get("ttl", now.Add(time.Second)); got != nil {
		t.Error("at expiry: served from the cache")
	}
	e = entry("fresh", "v")
	e.stored = now
	c.fill(e, 0)
	if got, _ := c.get("fresh", now.Add(time.Minute)); got != nil {
		t.Error("served past CACHE_TTL")
	}
}

// TestCacheNeverOlderThanS3: once a write has answered, no GET returns a value older than what S3 holds,
// however the S3 calls of overlapping requests return. S3 does not promise that concurrent PUTs answer in the
// order they took effect; here the first request's S3 call is held, once it took effect, until the other has
// answered.
func TestCacheNeverOlderThanS3(t *testing.T) {
	tests := []struct {
		name         string
		held         string // the S3 call whose return is held
		first, other func(t *testing.T, st *Store)
		want         string // "" for absent
	}{
		{"two PUTs", "PutObject", func(t *testing.T, st *Store) { put(t, st, "k", "A", PutOptions{}) },
			func(t *testing.T, st *Store) { put(t, st, "k", "B", PutOptions{}) }, "B"},
		{"PUT and DELETE", "PutObject", func(t *testing.T, st *Store) { put(t, st, "k", "A", PutOptions{}) },
			func(t *testing.T, st *Store) { st.Delete(context.Background(), "k", "", "") }, ""},
		{"a GET's fetch and a PUT", "GetObject", func(t *testing.T, st *Store) { get(t, st, "k") },
			func(t *testing.T, st *Store) { put(t, st, "k", "B", PutOptions{}) }, "B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, f, _ := newCachedStore(t)
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
			go func() { defer close(done); tt.first(t, st) }()
			<-held
			tt.other(t, st)
			close(release)
			<-done
			got, err := get(t, st, "k")
			if got != tt.want || (tt.want == "") != errors.Is(err, ErrNotFound) {
				t.Errorf("GET after both answered: got %q, %v, want %q (what S3 holds)", got, err, tt.want)
			}
		})
	}
}

// TestCacheNoFillDuringAWrite: a GET that reads S3 while a write is under way must not fill the cache: the
// write may take effect before it answers, and a read that saw it must not be followed by one that did not.
func TestCacheNoFillDuringAWrite(t *testing.T) {
	st, f, _ := newCachedStore(t)
	put(t, st, "k", "old", PutOptions{})
	applied, finish := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.hooks(nil, func(op, key string) {
		if op == "PutObject" {
			once.Do(func() { close(applied); <-finish })
		}
	})
	done := make(chan struct{})
	go func() { defer close(done); put(t, st, "k", "new", PutOptions{}) }()
	<-applied // S3 holds the new value; the PUT has not answered
	if got, _ := get(t, st, "k"); got != "new" {
		t.Fatalf("GET while the write is under way: got %q, want new", got)
	}
	close(finish)
	<-done
	if n := f.count("GetObject"); n != 1 {
		t.Errorf("S3 GETs: got %d, want 1", n)
	}
	get(t, st, "k")
	if n := f.count("GetObject"); n != 2 {
		t.Errorf("the GET during the write filled the cache (S3 GETs after another GET: %d, want 2)", n)
	}
}

// TestCacheAfterAnUnknownOutcome: a PUT that S3 does not answer may still be applied later; a GET in between
// must not leave the value it replaced in the cache. A later write with a known outcome lifts that.
func TestCacheAfterAnUnknownOutcome(t *testing.T) {
	st, f, _ := newCachedStore(t)
	put(t, st, "k", "old", PutOptions{})
	f.hooks(func(op, key string) error {
		if op == "PutObject" {
			return errors.New("read tcp: i/o timeout") // S3 has the request, kv has no answer
		}
		return nil
	}, nil)
	if _, err := st.Put(context.Background(), "k", strings.NewReader("new"), 3, PutOptions{}); err == nil {
		t.Fatal("the PUT did not fail")
	}
	f.hooks(nil, nil)
	if got, _ := get(t, st, "k"); got != "old" {
		t.Fatalf("GET: got %q, want old", got)
	}
	f.mu.Lock()
	f.objects[valueName("k")] = fakeObject{body: []byte("new"), etag: `"late"`} // S3 applies the PUT late
	f.mu.Unlock()
	if got, _ := get(t, st, "k"); got != "new" {
		t.Errorf("GET after S3 applied the PUT late: got %q, want new", got)
	}
	put(t, st, "k", "known", PutOptions{})
	gets := f.count("GetObject")
	get(t, st, "k")
	if get(t, st, "k"); f.count("GetObject") != gets+1 {
		t.Errorf("after a write with a known outcome the key is not cached again")
	}
}

func TestCacheRace(t *testing.T) {
	st, _, _ := newCachedStore(t)
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
					st.Delete(context.Background(), key, "", "")
				default:
					get(t, st, key)
				}
			}
		})
	}
	wg.Wait()
	var sum int64
	for el := st.cache.ll.Front(); el != nil; el = el.Next() {
		sum += entrySize(el.Value.(*cacheEntry))
	}
	writes := 0
	for _, slot := range st.cache.slots {
		writes += slot.writes
	}
	if st.cache.used != sum || sum > 200 || st.cache.ll.Len() != len(st.cache.items) || writes != 0 {
		t.Errorf("after concurrent use: %d bytes counted, %d held, %d items, %d in the map, %d writes left",
			st.cache.used, sum, st.cache.ll.Len(), len(st.cache.items), writes)
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
	m        *metrics
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
	ts := &testServer{st: st, s3: f, m: newMetrics(nil), log: &syncBuffer{}, clock: c, stopping: &atomic.Bool{}}
	ts.h = newServer(slog.New(slog.NewJSONHandler(ts.log, nil)), st, ts.m, cfg, ts.stopping)
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

// serve runs the handler behind a real server, set up as kv sets it up, for what needs a real connection.
func (ts *testServer) serve(t *testing.T, clientTimeout time.Duration) string {
	srv := httpServer(ts.h, slog.New(slog.NewJSONHandler(ts.log, nil)), clientTimeout)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
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
		t.Errorf("status %d, Retry-After %q: want Retry-After exactly on 503", status, w.Header().Get("Retry-After"))
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
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != 200 || got.Key != "dir/ünï k" ||
		got.Size != 5 {
		t.Fatalf("PUT: got %d %s, want 200, key \"dir/ünï k\", size 5", w.Code, w.Body)
	}
	if etag := w.Header().Get("ETag"); etag == "" || etag != got.ETag {
		t.Errorf("PUT ETag header %q, body etag %q: want the same", etag, got.ETag)
	}
	for _, method := range []string{"GET", "HEAD"} {
		w = ts.do(method, "/kv/dir/ünï%20k", "")
		if want := map[string]string{"GET": "hello"}[method]; w.Code != 200 || w.Body.String() != want {
			t.Errorf("%s: got %d %q, want 200 %q", method, w.Code, w.Body, want)
		}
		for h, want := range map[string]string{"Content-Type": "text/plain", "Content-Length": "5",
			"ETag": got.ETag, "Cache-Control": "no-cache"} {
			if v := w.Header().Get(h); v != want {
				t.Errorf("%s %s: got %q, want %q", method, h, v, want)
			}
		}
		if _, err := http.ParseTime(w.Header().Get("Last-Modified")); err != nil {
			t.Errorf("%s Last-Modified: %v", method, err)
		}
	}
	if n := ts.s3.count("GetObject"); n != 1 {
		t.Errorf("S3 GETs for a GET and a HEAD: got %d, want 1 (HEAD downloads nothing)", n)
	}
	for _, inm := range []string{got.ETag, "W/" + got.ETag, `"other", ` + got.ETag, "*"} {
		if w = ts.do("GET", "/kv/dir/ünï%20k", "", "If-None-Match", inm); w.Code != 304 || w.Body.Len() != 0 {
			t.Errorf("GET If-None-Match %s: got %d %q, want 304 and no body (weak comparison)", inm, w.Code, w.Body)
		}
	}
	if w = ts.do("DELETE", "/kv/dir/ünï%20k", "", "If-Match", got.ETag); w.Code != 204 {
		t.Errorf("DELETE: got %d, want 204", w.Code)
	}
	wantError(t, ts.do("GET", "/kv/dir/ünï%20k", ""), 404)
	if w = ts.do("PUT", "/kv/max", strings.Repeat("x", testMaxValue)); w.Code != 200 {
		t.Errorf("PUT of exactly MAX_VALUE_BYTES: got %d %s", w.Code, w.Body)
	}
	// A value keeps its type; none, or curl's default for --data-binary, is application/octet-stream.
	for sent, want := range map[string]string{"": "application/octet-stream", "text/csv": "text/csv",
		"application/x-www-form-urlencoded": "application/octet-stream"} {
		ts.do("PUT", "/kv/k", "", "Content-Type", sent)
		if got := ts.do("GET", "/kv/k", "").Header().Get("Content-Type"); got != want {
			t.Errorf("sent %q: got %q, want %q", sent, got, want)
		}
	}
}

func TestBadRequests(t *testing.T) {
	cursor := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
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
		{"key too long", "PUT", "/kv/" + strings.Repeat("k", maxObjectKey), "v", nil, 400},
		{"ttl zero", "PUT", "/kv/k?ttl=0", "v", nil, 400},
		{"ttl words", "PUT", "/kv/k?ttl=abc", "v", nil, 400},
		{"ttl empty", "PUT", "/kv/k?ttl=", "v", nil, 400},
		{"unknown parameter", "PUT", "/kv/k?tll=30s", "v", nil, 400},
		{"unknown list parameter", "GET", "/kv?perfix=a", "", nil, 400},
		{"versions on DELETE", "DELETE", "/kv/k?versions", "", nil, 400},
		{"malformed query", "PUT", "/kv/k?ttl=%zz", "v", nil, 400},
		{"If-None-Match etag", "PUT", "/kv/k", "v", []string{"If-None-Match", `"abc"`}, 400},
		{"both preconditions", "PUT", "/kv/k", "v", []string{"If-None-Match", "*", "If-Match", `"abc"`}, 400},
		{"non-ASCII Content-Type", "PUT", "/kv/k", "v", []string{"Content-Type", "text/ünï"}, 400},
		{"too large", "PUT", "/kv/k", strings.Repeat("x", testMaxValue+1), nil, 413},
		{"chunked", "PUT", "/kv/k", "v", []string{"Transfer-Encoding", "chunked"}, 411},
		{"If-Match on absent", "PUT", "/kv/k", "v", []string{"If-Match", `"abc"`}, 412},
		{"DELETE If-Match on absent", "DELETE", "/kv/k", "", []string{"If-Match", "*"}, 412},
		{"versions unversioned", "GET", "/kv/k?versions", "", nil, 400},
		{"delete version unversioned", "DELETE", "/kv/k?version=v0001", "", nil, 400},
		{"limit zero", "GET", "/kv?limit=0", "", nil, 400},
		{"limit words", "GET", "/kv?limit=ten", "", nil, 400},
		{"cursor not base64", "GET", "/kv?cursor=!!", "", nil, 400},
		{"cursor of a control character", "GET", "/kv?cursor=" + cursor("\x01"), "", nil, 400},
		{"cursor into the index", "GET", "/kv?cursor=" + cursor("../t/"), "", nil, 400},
		{"cursor outside the prefix", "GET", "/kv?prefix=a/&cursor=" + cursor("b"), "", nil, 400},
		{"bad prefix", "GET", "/kv?prefix=a%00", "", nil, 400},
		{"no such endpoint", "GET", "/nope", "", nil, 404},
		{"method on a key", "BREW", "/kv/k", "", nil, 405}, {"PUT on the listing", "PUT", "/kv", "", nil, 405},
		{"POST on health", "POST", "/healthz", "", nil, 405}, {"DELETE on metrics", "DELETE", "/metrics", "", nil, 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, testConfig())
			w := ts.do(tt.method, tt.target, tt.body, tt.header...)
			wantError(t, w, tt.status)
			if allow := w.Header().Get("Allow"); (tt.status == 405) != strings.HasPrefix(allow, "GET, HEAD") {
				t.Errorf("Allow: got %q, want the methods the path takes exactly on a 405", allow)
			}
			if n := ts.s3.count("PutObject") + ts.s3.count("DeleteObject") + ts.s3.count("ListObjectsV2"); n != 0 {
				t.Errorf("a rejected request made %d writes or listings", n)
			}
			if strings.Contains(ts.log.String(), `"level":"ERROR"`) {
				t.Errorf("a client's mistake was logged as an error:\n%s", ts.log)
			}
		})
	}
}

func TestTTLHeaders(t *testing.T) {
	ts := newTestServer(t, testConfig())
	var answer struct {
		ExpiresAt time.Time `json:"expires_at"`
	}
	json.Unmarshal(ts.do("PUT", "/kv/t?ttl=30", "v").Body.Bytes(), &answer)
	want := ts.clock.now().Add(30 * time.Second)
	for _, m := range []string{"GET", "HEAD"} {
		exp, err := http.ParseTime(ts.do(m, "/kv/t", "").Header().Get("Expires"))
		if err != nil || !exp.Equal(want.Truncate(time.Second)) || !answer.ExpiresAt.Equal(want) {
			t.Errorf("%s: Expires %v, %v, PUT's expires_at %v, want %v", m, exp, err, answer.ExpiresAt, want)
		}
	}
	ts.clock.add(30 * time.Second)
	wantError(t, ts.do("GET", "/kv/t", ""), 404)
	w := ts.do("PUT", "/kv/t", "v")
	if strings.Contains(w.Body.String(), "expires_at") || ts.do("GET", "/kv/t", "").Header().Get("Expires") != "" {
		t.Errorf("PUT without ttl: got %s and Expires on GET, want neither", w.Body)
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

// TestListPages: pages chain through opaque cursors, and an empty page is an empty list, not null.
func TestListPages(t *testing.T) {
	ts := newTestServer(t, testConfig())
	for _, k := range []string{"a/1", "a/2", "a/3", "b"} {
		ts.do("PUT", "/kv/"+k, "v")
	}
	var all []string
	cursor := ""
	for range 2 {
		var page struct {
			Keys       []string
			NextCursor string `json:"next_cursor"`
		}
		json.Unmarshal(ts.do("GET", "/kv?prefix=a/&limit=2&cursor="+cursor, "").Body.Bytes(), &page)
		all, cursor = append(all, page.Keys...), page.NextCursor
	}
	if strings.Join(all, ",") != "a/1,a/2,a/3" || cursor != "" {
		t.Errorf("keys: got %q, last cursor %q, want a/1 a/2 a/3 and none", all, cursor)
	}
	if w := ts.do("GET", "/kv?prefix=zzz", ""); w.Body.String() != "{\"keys\":[]}\n" {
		t.Errorf("empty list: got %q, want {\"keys\":[]}", w.Body)
	}
}

func TestRequestID(t *testing.T) {
	ts := newTestServer(t, testConfig())
	seen := map[string]bool{}
	for _, sent := range []string{"abc-123", strings.Repeat("x", 65), "has space", "tab\there", "ünï", "", ""} {
		got := ts.do("GET", "/healthz", "", "X-Request-ID", sent).Header().Get("X-Request-ID")
		if (got == sent) != (sent == "abc-123") || seen[got] {
			t.Errorf("ID %q: got %q, want it kept if sane, else a new one", sent, got)
		}
		seen[got] = true
	}
	if !strings.Contains(ts.log.String(), `"request_id":"abc-123","method":"GET","route":"GET /healthz","status":200`) {
		t.Errorf("the access line lacks the request's ID, method, route or status:\n%s", ts.log)
	}
}

// TestStoreErrorsToStatuses: an outage is a 503 with Retry-After, logged with its cause and without the key
// or the value; the backend refusing a key's name is the client's 400.
func TestStoreErrorsToStatuses(t *testing.T) {
	tests := []struct {
		name   string
		err    error // every S3 call's; NoSuchBucket: the bucket is gone, as MinIO answers then
		status int
	}{
		{"connection refused", errors.New("dial tcp: connection refused"), 503},
		{"bucket removed", apiError{"NoSuchBucket"}, 503},
		{"access denied", apiError{"AccessDenied"}, 503},
		{"key too long for the backend", apiError{"KeyTooLongError"}, 400},
	}
	requests := [][]string{{"PUT", "/kv/private-customer-key"}, {"GET", "/kv/private-customer-key"},
		{"HEAD", "/kv/private-customer-key"}, {"DELETE", "/kv/private-customer-key"},
		{"DELETE", "/kv/private-customer-key", "If-Match", "*"}, {"GET", "/kv?prefix=private-customer-key"}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, testConfig())
			ts.s3.noBucket = tt.name == "bucket removed"
			if !ts.s3.noBucket {
				ts.s3.hooks(func(op, key string) error { return tt.err }, nil)
			}
			for _, r := range requests {
				w := ts.do(r[0], r[1], "secret-value-42", r[2:]...)
				if r[1] == "/kv?prefix=private-customer-key" && tt.status == 400 {
					continue // a listing names no object
				}
				if r[0] == "HEAD" && w.Code == tt.status { // no body
					continue
				}
				wantError(t, w, tt.status)
				if strings.Contains(w.Body.String(), "refused") || strings.Contains(w.Body.String(), "NoSuch") {
					t.Errorf("%s %s: the error body leaks internals: %s", r[0], r[1], w.Body)
				}
			}
			logs := ts.log.String()
			if strings.Contains(logs, "secret-value-42") || strings.Contains(logs, "private-customer-key") {
				t.Errorf("the log holds a value or a key:\n%s", logs)
			}
			if (tt.status == 503) != strings.Contains(logs, `"level":"ERROR","msg":"storage unavailable"`) ||
				tt.status == 503 && !strings.Contains(logs, tt.err.Error()) {
				t.Errorf("log: want the cause logged exactly for an outage:\n%s", logs)
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
	ln.Close() // nothing listens there now: every S3 call is refused
	cfg := config{Bucket: "kv-test", Endpoint: "http://" + ln.Addr().String(), AccessKey: "k", SecretKey: "s",
		Region: "us-east-1", S3Timeout: 2 * time.Second, ClientTimeout: time.Second}
	m := newMetrics(nil)
	client, err := newS3Client(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(client, cfg.Bucket, cfg.S3Timeout, nil)
	var logs syncBuffer
	h := newServer(slog.New(slog.NewJSONHandler(&logs, nil)), st, m, cfg, &atomic.Bool{})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/kv/private-customer-key", nil))
	if w.Code != 503 || !strings.Contains(logs.String(), "connection refused") ||
		strings.Contains(logs.String(), "private-customer-key") {
		t.Errorf("GET with S3 refusing: got %d, log:\n%s\nwant 503 and the cause logged without the key", w.Code, &logs)
	}
	if m.s3[series{"GetObject", "", 0}] == nil {
		t.Error("the failed S3 call was not counted under its operation")
	}
}

// rawRequest writes raw to addr (in the background: a server may stop reading), half-closes when asked, and
// returns the answer's status code, 0 when the server closes the connection unanswered.
func rawRequest(t *testing.T, addr, raw string, halfClose bool) (int, http.Header) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		io.WriteString(c, raw)
		if halfClose {
			c.(*net.TCPConn).CloseWrite()
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second)) // the test's own bound, far past kv's
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
		return 0, nil
	case err != nil:
		t.Fatalf("neither an answer nor a closed connection for %.30q: %v", raw, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// TestHalfClosedClient: a client that sends its whole request and then closes its side (an HTTP/1.0-style
// client, nc -N) has its request carried out and answered as it ended, however long S3 takes.
func TestHalfClosedClient(t *testing.T) {
	ts := newTestServer(t, testConfig())
	ts.do("PUT", "/kv/old", "v")
	ts.s3.hooks(func(op, key string) error {
		time.Sleep(300 * time.Millisecond) // a slow S3: the connection's end arrives first
		return nil
	}, nil)
	addr := ts.serve(t, time.Second)
	tests := []struct {
		raw    string
		status int
	}{
		{"PUT /kv/new HTTP/1.1\r\nHost: kv\r\nContent-Length: 5\r\n\r\nhello", 200},
		{"DELETE /kv/old HTTP/1.1\r\nHost: kv\r\n\r\n", 204},
		{"HEAD /kv/new HTTP/1.1\r\nHost: kv\r\n\r\n", 200},
	}
	for _, tt := range tests {
		status, h := rawRequest(t, addr, tt.raw, true)
		if status != tt.status || strings.HasPrefix(tt.raw, "HEAD") && h.Get("ETag") == "" {
			t.Errorf("%.20q: got %d %v, want %d (a HEAD with its ETag)", tt.raw, status, h, tt.status)
		}
	}
	if !ts.s3.present(valueName("new")) || ts.s3.present(valueName("old")) {
		t.Errorf("after the requests: new stored %v, old stored %v, want true, false", ts.s3.present(valueName("new")),
			ts.s3.present(valueName("old")))
	}
}

// TestHostileClients: a body that stops arriving is a 408 and one cut short a 400, nothing stored; headers
// that dribble are cut at CLIENT_TIMEOUT and huge ones refused; a body longer than its Content-Length is
// stored as declared. A client that stops reading a long answer frees its request once a write makes no
// progress for CLIENT_TIMEOUT.
func TestHostileClients(t *testing.T) {
	cfg := testConfig()
	cfg.MaxValueBytes = 64 << 20
	ts := newTestServer(t, cfg)
	addr := ts.serve(t, cfg.ClientTimeout)
	tests := []struct {
		name, raw string
		halfClose bool
		status    int
	}{
		{"body stops arriving", "PUT /kv/a HTTP/1.1\r\nHost: kv\r\nContent-Length: 100\r\n\r\n0123456789", false, 408},
		{"body cut short", "PUT /kv/b HTTP/1.1\r\nHost: kv\r\nContent-Length: 100\r\n\r\n0123456789", true, 400},
		{"headers dribbled", "GET /kv/c HTTP/1.1\r\nHost: kv\r\nX-Slow: a", false, 0},
		{"huge headers", "GET /kv/d HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 1<<20) + "\r\n\r\n", false, 431},
		{"body longer than its length", "PUT /kv/e HTTP/1.1\r\nHost: kv\r\nContent-Length: 5\r\n\r\nhelloGARBAGE",
			false, 200},
	}
	for _, tt := range tests {
		if status, _ := rawRequest(t, addr, tt.raw, tt.halfClose); status != tt.status {
			t.Errorf("%s: got %d, want %d", tt.name, status, tt.status)
		}
	}
	a, b, e := ts.s3.present(valueName("a")), ts.s3.present(valueName("b")), ts.do("GET", "/kv/e", "").Body.String()
	if a || b || e != "hello" {
		t.Errorf("stored: a %v, b %v, e %q; want nothing of the broken bodies, e as declared", a, b, e)
	}
	ts.do("PUT", "/kv/big", strings.Repeat("v", 32<<20))
	get := func(readBuffer int) (*http.Response, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.(*net.TCPConn).SetReadBuffer(readBuffer)
		io.WriteString(c, "GET /kv/big HTTP/1.1\r\nHost: kv\r\n\r\n")
		return http.ReadResponse(bufio.NewReader(c), nil)
	}
	resp, err := get(256 << 10) // read slowly, but on: the whole value, however long it takes in all
	got := int64(0)
	for err == nil {
		n, rerr := io.CopyN(io.Discard, resp.Body, 256<<10)
		got, err = got+n, rerr
		time.Sleep(10 * time.Millisecond)
	}
	if got != 32<<20 || err != io.EOF {
		t.Errorf("a slow but steady reader: got %d bytes, %v, want all %d", got, err, 32<<20)
	}
	get(4 << 10) // and read nothing
	deadline := time.Now().Add(10 * time.Second)
	for ts.m.inFlight.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("a client that reads nothing still holds its request after 10 s (CLIENT_TIMEOUT is 200 ms)")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if strings.Contains(ts.log.String(), `"level":"ERROR"`) {
		t.Errorf("hostile clients were logged as storage errors:\n%s", ts.log)
	}
}

// TestValueLength: every value answer carries its length from the start, so a stream S3 breaks mid-value
// reaches the client broken, never as a shorter value.
func TestValueLength(t *testing.T) {
	ts := newTestServer(t, testConfig())
	ts.do("PUT", "/kv/k", "0123456789")
	ts.s3.truncate = 4
	resp, err := http.Get("http://" + ts.serve(t, time.Second) + "/kv/k")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.ContentLength != 10 || err == nil {
		t.Errorf("a broken stream: got length %d, %q, %v, want length 10 and a read error", resp.ContentLength, body,
			err)
	}
}

func TestHealthAndReady(t *testing.T) {
	ts := newTestServer(t, testConfig())
	heads := ts.s3.count("HeadBucket")
	for range 20 {
		if w := ts.do("GET", "/readyz", ""); w.Code != 200 || w.Body.String() != "{\"status\":\"ready\"}\n" {
			t.Fatalf("readyz: got %d %s", w.Code, w.Body)
		}
	}
	if n := ts.s3.count("HeadBucket") - heads; n != 1 {
		t.Errorf("20 probes at once made %d HeadBucket calls, want 1 (at most one a second)", n)
	}
	ts.stopping.Store(true)
	wantError(t, ts.do("GET", "/readyz", ""), 503)
	if w := ts.do("GET", "/healthz", ""); w.Code != 200 {
		t.Errorf("healthz while stopping: got %d, want 200", w.Code)
	}
}

// TestSetup: kv waits for an S3 that is not up yet, and stops at once, saying why, on what waiting cannot
// mend.
func TestSetup(t *testing.T) {
	refused := errors.New("dial tcp: connection refused")
	tests := []struct {
		name    string
		answers []error // HeadBucket's answers, in turn; then the fake's own
		cfg     config
		want    string // in the error; "" for none
	}{
		{"S3 not up yet", []error{refused, refused}, config{CreateBucket: true}, ""},
		{"no bucket, S3_CREATE_BUCKET=false", []error{refused, apiError{"NotFound"}}, config{},
			`bucket "test" does not exist and S3_CREATE_BUCKET is false`},
		{"wrong credentials", []error{apiError{"Forbidden"}}, config{AccessKey: "k", CreateBucket: true},
			"check S3_ACCESS_KEY and S3_SECRET_KEY"},
		{"the SDK's chain refused", []error{apiError{"InvalidAccessKeyId"}}, config{CreateBucket: true},
			"S3_ACCESS_KEY and S3_SECRET_KEY are unset"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeS3()
			var calls atomic.Int64
			f.before = func(op, key string) error {
				if n := int(calls.Add(1)); op == "HeadBucket" && n <= len(tt.answers) {
					return tt.answers[n-1]
				}
				return nil
			}
			st := newStore(f, "test", time.Second, nil)
			tt.cfg.Bucket, tt.cfg.StartupTimeout = "test", 30*time.Second
			err := setup(context.Background(), slog.New(slog.DiscardHandler), st, tt.cfg)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
			if tt.want != "" && int(calls.Load()) != len(tt.answers) {
				t.Errorf("S3 calls: got %d, want %d (no retry after a final answer)", calls.Load(), len(tt.answers))
			}
		})
	}
}

// TestShutdownSaysWhatRanOut: requests still running at SHUTDOWN_TIMEOUT are counted and the timeout named.
func TestShutdownSaysWhatRanOut(t *testing.T) {
	m := newMetrics(nil)
	block := make(chan struct{})
	defer close(block)
	log := slog.New(slog.DiscardHandler)
	srv := httpServer(withRequestLog(log, m, time.Second, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		<-block
	})), log, time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	go http.Get("http://" + ln.Addr().String() + "/")
	for m.inFlight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	err = shutdown(log, srv, m, &atomic.Bool{}, 50*time.Millisecond)
	if want := "SHUTDOWN_TIMEOUT (50ms) ran out with requests still running (1)"; err == nil ||
		!strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name, variable, value, want string // want: the error; "" for none
	}{
		{"defaults", "", "", ""},
		{"no bucket", "S3_BUCKET", "", "S3_BUCKET is required"},
		{"short bucket", "S3_BUCKET", "ab", `S3_BUCKET="ab": must be a bucket name`},
		{"half credentials", "S3_ACCESS_KEY", "k", "set both S3_ACCESS_KEY and S3_SECRET_KEY"},
		{"endpoint without scheme", "S3_ENDPOINT", "127.0.0.1:9000",
			`S3_ENDPOINT="127.0.0.1:9000": must be a URL such as http://minio:9000`},
		{"endpoint of another scheme", "S3_ENDPOINT", "minio:9000", "must be a URL such as http://minio:9000"},
		{"bad port", "PORT", "http", `PORT="http": must be a port number from 1 to 65535`},
		{"port out of range", "PORT", "70000", "must be a port number"},
		{"timeout without unit", "S3_TIMEOUT", "10", `S3_TIMEOUT="10": must be a positive duration such as 10s or 1m`},
		{"zero timeout", "CLIENT_TIMEOUT", "0s", "must be a positive duration"},
		{"negative cache ttl", "CACHE_TTL", "-1s", `CACHE_TTL="-1s": must be a duration such as 30s, or 0`},
		{"size with a unit", "CACHE_MAX_BYTES", "64MiB",
			`CACHE_MAX_BYTES="64MiB": must be a whole number of bytes, e.g. 67108864`},
		{"negative size", "MAX_VALUE_BYTES", "-1", "must be a whole number of bytes, e.g. 26214400"},
		{"bad level", "LOG_LEVEL", "loud", `LOG_LEVEL="loud": must be debug, info, warn or error`},
		{"bad bool", "S3_VERSIONING", "yes", `S3_VERSIONING="yes": must be true or false`},
		{"cache off", "CACHE_MAX_BYTES", "0", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"S3_BUCKET": "kv-data", tt.variable: tt.value}
			c, err := loadConfig(func(k string) string { return env[k] })
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if tt.name == "defaults" && (c.Port != "8080" || c.Region != "us-east-1" || c.MaxValueBytes != 25<<20 ||
				c.S3Timeout != 10*time.Second || !c.CreateBucket || c.LogLevel != slog.LevelInfo) {
				t.Errorf("defaults: got %+v", c)
			}
		})
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
	unset, err := loadConfig(func(k string) string { return map[string]string{"S3_BUCKET": "kv-data"}[k] })
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		env := map[string]string{"S3_BUCKET": "kv-data", row[1]: row[2]}
		if c, err := loadConfig(func(k string) string { return env[k] }); err != nil || c != unset {
			t.Errorf("%s=%s (the README's default): got %+v, %v, want the same as unset", row[1], row[2], c, err)
		}
	}
}

// TestLogWriter: lines written at once come out whole, and a line reaches the output within a second with
// nothing behind it.
func TestLogWriter(t *testing.T) {
	pr, pw := io.Pipe()
	l := &logWriter{w: bufio.NewWriter(pw)}
	log := slog.New(slog.NewJSONHandler(l, nil))
	lines := bufio.NewScanner(pr)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				log.Info("request", "n", g*1000+i, "err", errors.New(`a "quoted" error`))
			}
		})
	}
	for n := 0; n < 800; n++ {
		if !lines.Scan() || !json.Valid(lines.Bytes()) {
			t.Fatalf("line %d: got %q, want a JSON line", n, lines.Bytes())
		}
	}
	wg.Wait()
	log.Info("stopped")
	if !lines.Scan() || !strings.Contains(lines.Text(), `"msg":"stopped"`) {
		t.Errorf("got %q, want the last line written out without another behind it", lines.Text())
	}
}

// scrape reads /metrics, every line of which must be a comment or a sample of the text format.
func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	line := regexp.MustCompile(`^(# (HELP|TYPE) .+|[a-z_]+(\{[a-z_]+="[^"\n]*"(,[a-z_]+="[^"\n]*")*\})? [-+0-9.e]+)$`)
	for _, l := range strings.Split(strings.TrimSpace(w.Body.String()), "\n") {
		if !line.MatchString(l) {
			t.Errorf("not a line of the text format: %q", l)
		}
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type: got %q", ct)
	}
	return w.Body.String()
}

func TestMetrics(t *testing.T) {
	ts := newTestServer(t, testConfig())
	ts.m.cache = newCache(1<<20, 0)
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
		`http_request_duration_seconds_bucket{route="GET /kv/{key...}",method="GET",code="404",le="+Inf"} 2`,
		`http_request_duration_seconds_count{route="unmatched",method="GET",code="400"} 1`,
		`http_request_duration_seconds_count{route="/",method="other",code="405"} 1`,
		`http_requests_in_flight 1`,
		`kv_cache_items 0`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
	if strings.Contains(body, "private-missing") {
		t.Error("a key reached a metric label")
	}
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
}

func TestVersionRequests(t *testing.T) {
	ts := newTestServer(t, testConfig())
	ts.s3.versioned = true
	if err := ts.st.Setup(context.Background(), false, false); err != nil || !ts.st.versioned {
		t.Fatalf("an already versioned bucket was not noticed: %v", err)
	}
	var first struct{ Version string }
	json.Unmarshal(ts.do("PUT", "/kv/k", "one").Body.Bytes(), &first)
	ts.do("PUT", "/kv/k", "two")
	w := ts.do("GET", "/kv/k?version="+first.Version, "")
	if w.Body.String() != "one" || w.Header().Get("X-Version-Id") != first.Version {
		t.Errorf("GET ?version: got %q, X-Version-Id %q", w.Body, w.Header().Get("X-Version-Id"))
	}
	var page struct {
		Versions []map[string]any
		Next     string `json:"next_cursor"`
	}
	w = ts.do("GET", "/kv/k?versions&limit=1", "")
	if err := json.Unmarshal(w.Body.Bytes(), &page); err != nil || len(page.Versions) != 1 || page.Next == "" {
		t.Fatalf("GET ?versions&limit=1: got %s", w.Body)
	}
	for _, field := range []string{"version", "size", "etag", "last_modified", "latest", "deleted"} {
		if _, ok := page.Versions[0][field]; !ok {
			t.Errorf("a version lacks %q: %v", field, page.Versions[0])
		}
	}
	w = ts.do("GET", "/kv/k?versions&limit=1&cursor="+page.Next, "")
	if !strings.Contains(w.Body.String(), first.Version) || strings.Contains(w.Body.String(), "next_cursor") {
		t.Errorf("second page: got %s, want the first version and no next_cursor", w.Body)
	}
	for target, status := range map[string]int{"/kv/k?versions&cursor=IA": 400, "/kv/k?version=has%20space": 400,
		"/kv/k?version=nonsense": 400, "/kv/k?version=v9999": 404} {
		wantError(t, ts.do("GET", target, ""), status)
	}
	wantError(t, ts.do("DELETE", "/kv/k?version="+first.Version, "", "If-Match", "*"), 400)
	if w := ts.do("DELETE", "/kv/k?version="+first.Version, ""); w.Code != 204 {
		t.Errorf("DELETE ?version: got %d, want 204", w.Code)
	}
	wantError(t, ts.do("GET", "/kv/k?version="+first.Version, ""), 404)
}

func TestAuthToken(t *testing.T) {
	cfg := testConfig()
	cfg.AuthToken = "s3cr3t-token"
	ts := newTestServer(t, cfg)
	for _, tt := range []struct {
		method, target, auth string
		status               int
	}{
		{"PUT", "/kv/k", "", 401}, {"PUT", "/kv/k", "Bearer wrong", 401}, {"PUT", "/kv/k", "s3cr3t-token", 401},
		{"PUT", "/kv/k", "Basic s3cr3t-token", 401}, {"GET", "/kv", "", 401}, {"GET", "/metrics", "", 401},
		{"GET", "/kv/a//b", "", 401}, // no hint about keys before authentication
		{"PUT", "/kv/k", "Bearer s3cr3t-token", 200}, {"GET", "/kv/k", "bearer s3cr3t-token", 200},
		{"GET", "/metrics", "BEARER s3cr3t-token", 200}, {"GET", "/healthz", "", 200}, {"GET", "/readyz", "", 200},
	} {
		w := ts.do(tt.method, tt.target, "v", "Authorization", tt.auth)
		if w.Code != tt.status {
			t.Errorf("%s %s with %q: got %d, want %d", tt.method, tt.target, tt.auth, w.Code, tt.status)
		}
		if tt.status == 401 {
			wantError(t, w, 401)
			if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") ||
				!strings.Contains(w.Body.String(), "Bearer <AUTH_TOKEN>") {
				t.Errorf("401: got WWW-Authenticate %q, body %s", w.Header().Get("WWW-Authenticate"), w.Body)
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
		key, _ := strings.CutPrefix(u.Path, "/kv/")
		if w.Code >= 500 || (w.Code == 200) != (checkKey(key, false) == nil) {
			t.Fatalf("PUT %q: got %d %s, but checkKey says %v", raw, w.Code, w.Body, checkKey(key, false))
		}
		if w.Code != 200 {
			return
		}
		if got, ok := keyOf(strings.TrimPrefix(valueName(key), valuePrefix)); !ok || got != key {
			t.Fatalf("key %q: object %q maps back to %q, %v", key, valueName(key), got, ok)
		}
		if v, err := get(t, ts.st, key); err != nil || v != "value" {
			t.Fatalf("key %q: read back %q, %v", key, v, err)
		}
	})
}
