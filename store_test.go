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
	"runtime"
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
		line := fmt.Sprintf("kv: %d tests skipped their real-S3 half: set S3_ENDPOINT, S3_BUCKET, S3_ACCESS_KEY "+
			"and S3_SECRET_KEY to run them (see README, Tests)\n", n)
		fmt.Print(line)
		if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil && !testing.Verbose() {
			fmt.Fprint(tty, line)
			tty.Close()
		}
	}
	os.Exit(code)
}

// fakeS3 is an in-memory S3 bucket with the semantics the store relies on: conditional PutObject, If-Match on
// deletes (as AWS honours it, or ignored as MinIO does), typed not-found errors, sorted listing, versioning,
// and MinIO's answers for a missing bucket (a bare 404 on HEAD, NoSuchBucket elsewhere). Every object's
// LastModified is the same whole second, as AWS lists times: nothing can be ordered by it.
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
	// before runs (unlocked) at the start of each call, to inject failures, stalls or races; after runs once a
	// call has done its work, before it returns.
	before func(ctx context.Context, op, key string) error
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

var fakeTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newFakeS3() *fakeS3 {
	return &fakeS3{objects: map[string]fakeObject{}, history: map[string][]fakeObject{}, calls: map[string]int{}}
}

// apiError is an S3 error as the SDK returns it.
type apiError struct{ code string }

func (e apiError) Error() string     { return "api error " + e.code }
func (e apiError) ErrorCode() string { return e.code }

// stall is a before hook that holds op's calls until their context ends, as a stalled S3 would.
func stall(op string) func(ctx context.Context, o, key string) error {
	return func(ctx context.Context, o, key string) error {
		if o == op {
			<-ctx.Done()
		}
		return nil
	}
}

// failing is a before hook that fails the calls of op on names with prefix.
func failing(op, prefix string, err error) func(ctx context.Context, o, key string) error {
	return func(_ context.Context, o, key string) error {
		if o == op && strings.HasPrefix(key, prefix) {
			return err
		}
		return nil
	}
}

// call counts a call, runs before, and fails it as S3 would when the bucket is gone (a HEAD's 404 has no code)
// or as the SDK does when ctx has ended; done runs after once the call has done its work.
func (f *fakeS3) call(ctx context.Context, op, key string) (done func(), err error) {
	f.mu.Lock()
	f.calls[op]++
	before, after, noBucket := f.before, f.after, f.noBucket
	f.mu.Unlock()
	if before != nil {
		err = before(ctx, op, key)
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
func (f *fakeS3) hooks(before func(ctx context.Context, op, key string) error, after func(op, key string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.before, f.after = before, after
}

func (f *fakeS3) count(op string) int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls[op] }

// total counts every call made so far.
func (f *fakeS3) total() (n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		n += c
	}
	return n
}

// stamp gives a new version its id (locked).
func (f *fakeS3) stamp(o *fakeObject) {
	f.seq++
	o.modified = fakeTime
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
	if err != nil || in.ContentLength != nil && int64(len(body)) != *in.ContentLength {
		return nil, fmt.Errorf("fake: body of %d bytes, ContentLength %d: %w", len(body), aws.ToInt64(in.ContentLength), err)
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
	return f.delete(*in.Key, in.VersionId, in.IfMatch, done)
}

// delete deletes as DeleteObject does (locked).
func (f *fakeS3) delete(key string, version, ifMatch *string, done func()) (*s3.DeleteObjectOutput, error) {
	o, exists := f.objects[key]
	switch {
	case ifMatch != nil && f.ignoreDeleteETag:
	case ifMatch != nil && !exists:
		return nil, apiError{"NoSuchKey"}
	case ifMatch != nil && *ifMatch != o.etag:
		return nil, apiError{"PreconditionFailed"}
	}
	defer done()
	if version != nil && !f.versioned && *version == "null" {
		delete(f.objects, key)
		return &s3.DeleteObjectOutput{}, nil
	}
	if version != nil { // for good; S3 does not mind an unknown version
		if _, err := f.version(key, *version, false); errorCode(err) == "InvalidArgument" {
			return nil, err
		}
		h := slices.DeleteFunc(f.history[key], func(o fakeObject) bool { return o.version == *version })
		f.history[key] = h
		delete(f.objects, key)
		if len(h) == 0 {
			delete(f.history, key)
		} else if !h[len(h)-1].marker {
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

func (f *fakeS3) DeleteObjects(ctx context.Context, in *s3.DeleteObjectsInput, _ ...func(*s3.Options)) (
	*s3.DeleteObjectsOutput, error) {
	done, err := f.call(ctx, "DeleteObjects", "")
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &s3.DeleteObjectsOutput{}
	for _, o := range in.Delete.Objects {
		if _, err := f.delete(*o.Key, o.VersionId, nil, func() {}); err != nil {
			out.Errors = append(out.Errors, types.Error{Key: o.Key, Code: aws.String(errorCode(err))})
		}
	}
	done()
	return out, nil
}

func (f *fakeS3) PutBucketVersioning(ctx context.Context, in *s3.PutBucketVersioningInput,
	_ ...func(*s3.Options)) (*s3.PutBucketVersioningOutput, error) {
	done, err := f.call(ctx, "PutBucketVersioning", "")
	f.mu.Lock()
	f.versioned = err == nil && in.VersioningConfiguration.Status == types.BucketVersioningStatusEnabled
	f.mu.Unlock()
	done()
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

// ListObjectVersions lists keys in order, each key's versions newest first, resuming after the markers, as
// S3 does; an unversioned bucket's objects are versions "null". It writes its answer's order to the buffer
// the context carries, as s3Transport copies S3's answer there.
func (f *fakeS3) ListObjectVersions(ctx context.Context, in *s3.ListObjectVersionsInput,
	_ ...func(*s3.Options)) (*s3.ListObjectVersionsOutput, error) {
	if _, err := f.call(ctx, "ListObjectVersions", aws.ToString(in.Prefix)); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	raw, _ := ctx.Value(rawAnswer{}).(*bytes.Buffer)
	out := &s3.ListObjectVersionsOutput{}
	marker, skipping, n := aws.ToString(in.KeyMarker), in.VersionIdMarker != nil, 0
	history := f.history
	if !f.versioned {
		history = map[string][]fakeObject{}
		for k, o := range f.objects {
			o.version = "null"
			history[k] = []fakeObject{o}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(history)) {
		if !strings.HasPrefix(k, aws.ToString(in.Prefix)) || k < marker || k == marker && !skipping {
			continue
		}
		h := history[k]
		for i := len(h) - 1; i >= 0; i-- {
			o, latest := h[i], aws.Bool(i == len(h)-1)
			if skipping && k == marker {
				skipping = o.version != *in.VersionIdMarker
				continue
			}
			if n == int(aws.ToInt32(in.MaxKeys)) {
				out.IsTruncated = aws.Bool(true)
				return out, nil
			}
			n++
			out.NextKeyMarker, out.NextVersionIdMarker = aws.String(k), aws.String(o.version)
			if raw != nil {
				fmt.Fprintf(raw, "<VersionId>%s</VersionId>", o.version)
			}
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
		out.Contents = append(out.Contents, types.Object{Key: aws.String(k), LastModified: aws.Time(f.objects[k].modified)})
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

// left returns the names under prefix of every object, version or delete marker the fake bucket holds.
func (f *fakeS3) left(prefix string) (names []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range slices.Sorted(maps.Keys(f.objects)) {
		if strings.HasPrefix(k, prefix) && len(f.history[k]) == 0 {
			names = append(names, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(f.history)) {
		for range f.history[k] {
			if strings.HasPrefix(k, prefix) {
				names = append(names, k)
			}
		}
	}
	return names
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
	st := newStore(f, slog.New(slog.DiscardHandler), "test", time.Second, nil)
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)}
	st.now = c.now
	if err := st.Setup(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	return st, f, c
}

func newCachedStore(t *testing.T) (*Store, *fakeS3, *clock) {
	st, f, c := newFakeStore(t)
	st.cache = newCache(1<<20, 0, 100*time.Millisecond)
	return st, f, c
}

// versioned turns versioning on for a fake store.
func versioned(st *Store, f *fakeS3) {
	f.versioned, st.versioned = true, true
}

// Conditions as a PUT or DELETE with If-Match: list, or with If-None-Match: *, carries them.
func ifMatch(list string) Condition {
	return func(cur Meta, exists bool) bool { return exists && etagMatch(list, cur.ETag, false) }
}

func ifAbsent(_ Meta, exists bool) bool { return !exists }

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

// walk lists prefix a page of limit at a time, following the cursors (checked as the handler checks them) to
// the end.
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
		if key, _ := keyOf(next); checkKey(key, true) != nil {
			t.Fatalf("page %d: the handler would refuse the cursor %.40q: %v", pages, next, checkKey(key, true))
		}
		after = next
	}
	t.Fatal("a walk that does not end")
	return nil
}

// stores returns the fake store and, when S3_ENDPOINT is set, a store on that S3, so the fake cannot drift.
// versioning: a bucket of the test's own with versioning on, removed when the test ends. Whatever a test
// writes under its keyPrefix in the shared bucket is deleted when it ends.
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
		bucket = fmt.Sprintf("%s-v%x", bucket, rand.Uint32())
	}
	env := func(k string) string { return cmp.Or(map[string]string{"S3_BUCKET": bucket}[k], os.Getenv(k)) }
	cfg, err := loadConfig(env)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	client, err := newS3Client(context.Background(), cfg, newMetrics(nil), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(client, slog.New(slog.DiscardHandler), cfg.Bucket, cfg.S3Timeout, nil)
	if err := st.Setup(context.Background(), versioning); err != nil {
		t.Fatalf("bucket %q on %s: %v", cfg.Bucket, cfg.Endpoint, err)
	}
	t.Cleanup(func() { cleanBucket(t, client, bucket, versioning) })
	impls["s3"] = st
	return impls
}

// cleanBucket deletes every version the tests left in bucket (only their own keys, in a shared one) and a
// bucket of the test's own.
func cleanBucket(t *testing.T, client *s3.Client, bucket string, own bool) {
	ctx, mine := context.Background(), "test-"+strings.ReplaceAll(t.Name(), "/", "_")
	p := s3.NewListObjectVersionsPaginator(client, &s3.ListObjectVersionsInput{Bucket: &bucket})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Errorf("cleaning %s: %v", bucket, err)
			return
		}
		var ids []types.ObjectIdentifier
		for _, v := range out.Versions {
			ids = append(ids, types.ObjectIdentifier{Key: v.Key, VersionId: v.VersionId})
		}
		for _, d := range out.DeleteMarkers {
			ids = append(ids, types.ObjectIdentifier{Key: d.Key, VersionId: d.VersionId})
		}
		ids = slices.DeleteFunc(ids, func(id types.ObjectIdentifier) bool { return !own && !strings.Contains(*id.Key, mine) })
		if len(ids) > 0 {
			client.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &bucket, Delete: &types.Delete{Objects: ids}})
		}
	}
	if own {
		client.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &bucket})
	}
}

func TestObjectPath(t *testing.T) {
	for key, want := range map[string]string{"a": "a!", "a/b": "a/b!", "!": "!!!", "!x/y!/!!": "!!x/y!!/!!!!!",
		"ünï/cödé": "ünï/cödé!"} {
		if got := objectPath(key); got != want {
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
			if strings.HasPrefix(objectPath(k2), objectPath(k1)+"/") {
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
// is named, and an answer kv does not understand, or none in time, is no sentinel (an outage) that says so.
func TestErrorsKeepTheirCause(t *testing.T) {
	tests := []struct {
		code, version string
		want          error // nil: no sentinel
	}{
		{"NoSuchKey", "", ErrNotFound}, {"NotFound", "", ErrNotFound}, {"NoSuchVersion", "v1", ErrNoVersion},
		{"NotFound", "v1", ErrNoVersion}, {"MethodNotAllowed", "v1", ErrNoVersion}, {"MethodNotAllowed", "", nil},
		{"PreconditionFailed", "", ErrPrecondition}, {"ConditionalRequestConflict", "", ErrPrecondition},
		{"KeyTooLongError", "", ErrBadKey}, {"XMinioInvalidObjectName", "", ErrBadKey}, {"BadRequest", "", nil},
		{"BadRequest", "v1", ErrBadVersion}, {"InvalidArgument", "v1", ErrBadVersion}, {"NoSuchBucket", "", ErrNoBucket},
		{"Forbidden", "", ErrDenied}, {"ExistingObjectIsDirectory", "", ErrBadKey}, {"InvalidAccessKeyId", "", ErrDenied},
		{"SignatureDoesNotMatch", "", ErrDenied}, {"ExpiredToken", "", nil}, {"EntityTooLarge", "", nil},
	}
	sentinels := []error{ErrNotFound, ErrNoVersion, ErrPrecondition, ErrBadKey, ErrBadVersion, ErrNoBucket, ErrDenied}
	for _, tt := range tests {
		cause := fmt.Errorf("operation error S3: HeadObject: %w", apiError{tt.code})
		got := failObject("head", tt.version, cause)
		if !errors.Is(got, cause) || !strings.HasPrefix(got.Error(), "s3 head: ") {
			t.Errorf("%s: got %v, want the S3 error wrapped, naming the operation", tt.code, got)
		}
		for _, s := range sentinels {
			if errors.Is(got, s) != (s == tt.want || tt.want == ErrNoVersion && s == ErrNotFound) {
				t.Errorf("%s (version %q): got %v, want sentinel %v", tt.code, tt.version, got, tt.want)
			}
		}
	}
	timeout := fail("put", fmt.Errorf("operation error S3: PutObject: %w", context.DeadlineExceeded))
	if !strings.Contains(timeout.Error(), "no answer within S3_TIMEOUT") || fail("get", nil) != nil {
		t.Errorf("a call that ran out of time: got %v, want it to say so", timeout)
	}
}

// TestStoreAcceptance runs the store's contract on the fake and on a real S3: conditional writes and deletes
// (exactly one of racing If-Match writers wins), idempotent deletes, listing in pages.
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
				if err := st.Delete(ctx, p+"missing", "", nil); err != nil {
					t.Errorf("delete missing: got %v, want nil", err)
				}
			}
			m := put(t, st, p+"a", "one", PutOptions{ContentType: "text/plain", Condition: ifAbsent})
			for key, cond := range map[string]Condition{p + "a": ifAbsent, p + "a ": ifMatch(`"0123"`),
				p + "a  ": ifMatch("W/" + m.ETag), p + "none": ifMatch(m.ETag), p + "none ": ifMatch("*")} {
				key = strings.TrimSpace(key)
				if _, err := st.Put(ctx, key, strings.NewReader("two"), 3, PutOptions{Condition: cond}); !errors.Is(err,
					ErrPrecondition) {
					t.Errorf("PUT %s: got %v, want ErrPrecondition", key, err)
				}
				if err := st.Delete(ctx, key, "", cond); !errors.Is(err, ErrPrecondition) {
					t.Errorf("DELETE %s: got %v, want ErrPrecondition", key, err)
				}
			}
			var wins atomic.Int64 // of writers racing with one If-Match, exactly one wins
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					o := PutOptions{Condition: ifMatch(m.ETag)}
					_, err := st.Put(ctx, p+"a", strings.NewReader(strconv.Itoa(i)), 1, o)
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
			m2 := put(t, st, p+"a", "two", PutOptions{Condition: ifMatch(`"0123", ` + m.ETag)})
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
			if err := st.Delete(ctx, p+"a", "", ifMatch(m2.ETag)); err != nil {
				t.Errorf("DELETE If-Match the current ETag: %v", err)
			}
			for _, k := range want[2:] {
				if err := st.Delete(ctx, k, "", ifMatch("*")); err != nil {
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
	_, err := st.Put(ctx, "k", strings.NewReader("x"), 1, PutOptions{Condition: ifMatch(m.ETag)})
	if !errors.Is(err, ErrPrecondition) {
		t.Errorf("If-Match on an expired value: got %v, want ErrPrecondition", err)
	}
	put(t, st, "k", "fresh", PutOptions{Condition: ifAbsent}) // an expired value counts as absent
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
	c.add(3 * time.Second)
	f.hooks(func(_ context.Context, op, key string) error {
		if op == "DeleteObject" {
			f.hooks(nil, nil)
			sweepNow(t, st) // the sweep gets there first
		}
		return nil
	}, nil)
	put(t, st, "k", "new", PutOptions{Condition: ifAbsent})
	if got, err := get(t, st, "k"); err != nil || got != "new" {
		t.Errorf("after If-None-Match: got %q, %v, want new", got, err)
	}
}

func TestSweep(t *testing.T) {
	st, f, c := newFakeStore(t)
	put(t, st, "gone", "v", PutOptions{TTL: 5 * time.Second})
	put(t, st, "later", "v", PutOptions{TTL: time.Hour})
	put(t, st, "rewritten", "v", PutOptions{TTL: 5 * time.Second})
	put(t, st, "rewritten", "permanent", PutOptions{})
	put(t, st, "deleted", "v", PutOptions{TTL: 5 * time.Second})
	if err := st.Delete(context.Background(), "deleted", "", nil); err != nil {
		t.Fatal(err)
	}
	put(t, st, "forever", "v", PutOptions{})
	c.add(6 * time.Second)
	if n := sweepNow(t, st); n != 1 {
		t.Fatalf("sweep: got %d deleted, want 1", n)
	}
	for key, want := range map[string]bool{"gone": false, "later": true, "rewritten": true, "forever": true} {
		if f.present(valueName(key)) != want {
			t.Errorf("object of %q present: got %v, want %v", key, !want, want)
		}
	}
	if index := f.left(indexPrefix); len(index) != 1 || !strings.HasSuffix(index[0], "/later!") {
		t.Errorf("index after sweep: got %q, want only the entry of later", index)
	}
	if n := sweepNow(t, st); n != 0 {
		t.Errorf("second sweep: got %d deleted, want nothing to do", n)
	}
	// An entry is due once the whole second its value expired in has passed: the value goes then, not before.
	m := put(t, st, "soon", "v", PutOptions{TTL: 3500 * time.Millisecond})
	c.add(time.Unix(dueSecond(m.ExpiresAt), 0).Sub(c.now()) - time.Millisecond)
	heads := f.count("HeadObject")
	if n := sweepNow(t, st); n != 0 || !f.present(valueName("soon")) || f.count("HeadObject") != heads {
		t.Errorf("before its entry's second: %d deleted, %d HEADs, want the value kept, not looked at", n,
			f.count("HeadObject")-heads)
	}
	c.add(time.Millisecond)
	if n := sweepNow(t, st); n != 1 {
		t.Errorf("in its entry's second: got %d deleted, want 1", n)
	}
}

// TestSweepCalls: the sweep costs at most two S3 calls per expired key (its HEAD and its delete; three on a
// versioned bucket, which checks what its marker buried) and a few per page, short TTLs (which write a second
// entry) included, and leaves nothing behind in the index, versioned or not.
func TestSweepCalls(t *testing.T) {
	for _, versioning := range []bool{false, true} {
		t.Run(fmt.Sprint("versioned=", versioning), func(t *testing.T) {
			st, f, c := newFakeStore(t)
			if versioning {
				versioned(st, f)
			}
			for i := range 100 {
				put(t, st, fmt.Sprintf("k%03d", i), "v", PutOptions{TTL: time.Second})
			}
			c.add(3 * time.Second)
			before := f.total()
			if n := sweepNow(t, st); n != 100 {
				t.Fatalf("sweep: got %d deleted, want 100", n)
			}
			perKey := map[bool]int{false: 2, true: 3}[versioning]
			if calls := f.total() - before; calls > perKey*100+3 {
				t.Errorf("S3 calls: got %d for 100 expired keys, want at most %d", calls, perKey*100+3)
			}
			if left := f.left(indexPrefix); len(left) != 0 {
				t.Errorf("index after the sweep: %d objects, versions or markers left, want none", len(left))
			}
		})
	}
}

// TestSweepPagesInBatches: a backlog of 1,500 due keys is swept a page at a time, in bounded memory (no LIST
// over a page), with one HEAD per due key and none for the others.
func TestSweepPagesInBatches(t *testing.T) {
	st, f, c := newFakeStore(t)
	for i := range 1500 {
		put(t, st, fmt.Sprintf("due/%04d", i), "v", PutOptions{TTL: 5 * time.Second})
	}
	put(t, st, "due/0007", "rewritten for good", PutOptions{})
	put(t, st, "due/0008", "rewritten, later", PutOptions{TTL: time.Hour})
	for i := range 50 {
		put(t, st, fmt.Sprintf("live/%02d", i), "v", PutOptions{TTL: time.Hour})
		put(t, st, fmt.Sprintf("permanent/%02d", i), "v", PutOptions{})
	}
	c.add(7 * time.Second)
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
	if n := len(f.left(indexPrefix)); n != 51 || len(listKeys(t, st, "due/")) != 2 {
		t.Errorf("after the sweep: %d index entries, %q listed, want 51 and the two rewrites", n,
			listKeys(t, st, "due/"))
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
			put(t, st, "k", "old", PutOptions{TTL: 5 * time.Second})
			c.add(6 * time.Second)
			f.hooks(func(_ context.Context, op, key string) error {
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
			if tt.want != "" && len(f.left(indexPrefix)) != 1 {
				t.Errorf("index: got %q, want the write's own entry only", f.left(indexPrefix))
			}
		})
	}
}

// TestTTLWriteNeedsItsEntry: a TTL write whose index entry S3 refuses fails and stores nothing, since nothing
// would reclaim the value.
func TestTTLWriteNeedsItsEntry(t *testing.T) {
	st, f, _ := newFakeStore(t)
	f.hooks(failing("PutObject", indexPrefix, errors.New("connection reset")), nil)
	_, err := st.Put(context.Background(), "k", strings.NewReader("v"), 1, PutOptions{TTL: time.Minute})
	if err == nil || f.present(valueName("k")) {
		t.Errorf("got %v, value stored %v; want an error and nothing stored", err, f.present(valueName("k")))
	}
}

// TestSweepKeepsWhatItCouldNotFinish: when a HEAD, a value's delete or the entries' delete fails, the entry
// stays, the sweep says so, and the next sweep finishes the work. Its error is the first, with a count.
func TestSweepKeepsWhatItCouldNotFinish(t *testing.T) {
	for _, fault := range []string{"HeadObject", "DeleteObject", "DeleteObjects"} {
		t.Run(fault, func(t *testing.T) {
			st, f, c := newFakeStore(t)
			put(t, st, "k", "v", PutOptions{TTL: 5 * time.Second})
			c.add(6 * time.Second)
			f.hooks(failing(fault, "", errors.New("connection reset")), nil)
			if _, err := st.Sweep(context.Background()); err == nil || len(f.left(indexPrefix)) != 1 {
				t.Errorf("got %v and entries %q, want an error and the entry kept", err, f.left(indexPrefix))
			}
			f.hooks(nil, nil)
			sweepNow(t, st)
			if f.present(valueName("k")) || len(f.left(indexPrefix)) != 0 {
				t.Errorf("next sweep: value there %v, entries %q, want both gone", f.present(valueName("k")),
					f.left(indexPrefix))
			}
		})
	}
	st, f, c := newFakeStore(t)
	for i := range 500 {
		put(t, st, fmt.Sprintf("k%03d", i), "v", PutOptions{TTL: 5 * time.Second})
	}
	c.add(6 * time.Second)
	f.hooks(failing("HeadObject", "", apiError{"SlowDown"}), nil)
	_, err := st.Sweep(context.Background())
	if err == nil || len(err.Error()) > 200 || !strings.HasPrefix(err.Error(), "500 failed, the first: ") {
		t.Errorf("500 failed HEADs: got %d bytes: %.300v, want the first error and the count", len(fmt.Sprint(err)), err)
	}
}

// TestSlowTTLUpload: a value whose upload outlasts its TTL is reclaimed, whether it lands after a sweep has
// dropped its entry or while the sweep drops it: the PUT puts an entry of its own once it lands.
func TestSlowTTLUpload(t *testing.T) {
	for _, landsDuringTheDrop := range []bool{false, true} {
		t.Run(fmt.Sprint("lands during the drop: ", landsDuringTheDrop), func(t *testing.T) {
			st, f, c := newFakeStore(t)
			land, landed := make(chan struct{}), make(chan struct{})
			var once sync.Once
			f.hooks(func(_ context.Context, op, key string) error {
				switch {
				case op == "PutObject" && key == valueName("k"):
					once.Do(func() { c.add(2 * time.Second); <-land })
				case op == "DeleteObjects" && landsDuringTheDrop:
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
			c.add(2 * time.Second)
			if n := sweepNow(t, st); n != 1 || f.present(valueName("k")) || len(f.left(indexPrefix)) != 0 {
				t.Errorf("next sweep: %d deleted, value there %v, entries %q, want the value and its entry gone", n,
					f.present(valueName("k")), f.left(indexPrefix))
			}
		})
	}
}

// TestVersionDeleteResurfacesAnExpiredValue: deleting the current version can bring back an older TTL value
// whose entry the sweep dropped while it lay buried; it is expired, so absent, and reclaimed.
func TestVersionDeleteResurfacesAnExpiredValue(t *testing.T) {
	st, f, c := newFakeStore(t)
	versioned(st, f)
	put(t, st, "k", "brief", PutOptions{TTL: 5 * time.Second})
	m := put(t, st, "k", "permanent", PutOptions{})
	c.add(6 * time.Second)
	sweepNow(t, st) // the brief value is buried: its entry goes
	if err := st.Delete(context.Background(), "k", m.Version, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, st, "k"); !errors.Is(err, ErrNotFound) || len(listKeys(t, st, "")) != 0 {
		t.Errorf("after the version delete: got %v, listed %q, want ErrNotFound, not listed", err, listKeys(t, st, ""))
	}
	c.add(2 * time.Second)
	if n := sweepNow(t, st); n != 1 || len(f.left(indexPrefix)) != 0 {
		t.Errorf("sweep: %d deleted, entries %q, want the resurfaced value reclaimed", n, f.left(indexPrefix))
	}
}

// TestAfterthoughtsFailing: when a write took effect and only the index entry kv writes after it fails, the
// write succeeds (a retry would find it done) and the failure is logged.
func TestAfterthoughtsFailing(t *testing.T) {
	st, f, _ := newFakeStore(t)
	versioned(st, f)
	var logs syncBuffer
	st.log = slog.New(slog.NewJSONHandler(&logs, nil))
	f.hooks(func(_ context.Context, op, key string) error {
		if op == "PutObject" && key == valueName("k") {
			f.hooks(failing("PutObject", indexPrefix, errors.New("connection reset")), nil)
		}
		return nil
	}, nil)
	m, err := st.Put(context.Background(), "k", strings.NewReader("v"), 1, PutOptions{TTL: time.Second})
	if err != nil || !f.present(valueName("k")) {
		t.Errorf("a short TTL write whose second entry fails: got %v, stored %v, want success", err, f.present(valueName("k")))
	}
	f.hooks(nil, nil)
	over := put(t, st, "k", "over it", PutOptions{})
	f.hooks(failing("PutObject", indexPrefix, errors.New("connection reset")), nil)
	err = st.Delete(context.Background(), "k", over.Version, nil) // brings back the TTL value, whose entry fails
	if got, _ := st.Head(context.Background(), "k", ""); err != nil || got.ETag != m.ETag {
		t.Errorf("a version delete whose re-index fails: got %v, current %+v, want success, the TTL value", err, got)
	}
	if n := strings.Count(logs.String(), `"level":"WARN"`); n != 2 || !strings.Contains(logs.String(), "connection reset") {
		t.Errorf("log: got %d warnings, want 2 naming the cause:\n%s", n, &logs)
	}
}

// TestListWalks: a walk through the pages lists every live key once, whatever the page size: not an expired
// one (swept or not), not an object kv did not write, and past keys of every length and number of "!".
func TestListWalks(t *testing.T) {
	st, f, c := newFakeStore(t)
	want := []string{"k/" + strings.Repeat(strings.Repeat("!", 100)+"/", 3)[:302], "k/" + longKey[2:]}
	for _, k := range want {
		put(t, st, k, "v", PutOptions{})
	}
	for i := range 30 {
		key := fmt.Sprintf("k/%02d", i)
		if i%3 == 0 {
			want = append(want, key)
			put(t, st, key, "v", PutOptions{})
		} else {
			put(t, st, key, "v", PutOptions{TTL: 5 * time.Second})
		}
	}
	slices.Sort(want)
	for _, name := range []string{"v/k/00", "v/k/05x", "v/k/05!!x", "v/z"} {
		f.objects[name] = fakeObject{}
	}
	c.add(5 * time.Second)
	for _, limit := range []int{1, 2, 4, 100} {
		if all := walk(t, st, "k/", limit); !slices.Equal(all, want) {
			t.Errorf("limit %d: walked %q, want %q", limit, all, want)
		}
	}
}

// TestListCalls: a page of settled keys none of which is due costs two S3 calls (the page and the index); a
// key that may have expired (an entry due, or a value too recent to be sure of) costs a HEAD, and an expired
// one is never listed; a failed HEAD fails the page; more due entries than one index page holds HEAD all.
func TestListCalls(t *testing.T) {
	st, f, c := newFakeStore(t)
	var want []string
	for i := range 200 {
		want = append(want, fmt.Sprintf("k/%03d", i))
		put(t, st, want[i], "v", PutOptions{TTL: time.Duration(i%2) * time.Hour})
	}
	put(t, st, "k/expired", "v", PutOptions{TTL: 5 * time.Second})
	c.add(6 * time.Second)
	list := func() ([]string, int, error) {
		before := f.total()
		keys, _, err := st.List(context.Background(), "", "", 1000)
		return keys, f.total() - before, err
	}
	if keys, calls, err := list(); err != nil || !slices.Equal(keys, want) || calls != 3 {
		t.Errorf("settled keys, one expired: got %d keys, %d S3 calls, %v, want %d keys and 3 calls", len(keys), calls,
			err, len(want))
	}
	for k, o := range f.objects { // every value is recent
		o.modified = c.now().Add(-settled + time.Second)
		f.objects[k] = o
	}
	if keys, calls, _ := list(); !slices.Equal(keys, want) || calls != 2+len(want)+1 {
		t.Errorf("recent values: got %d keys, %d S3 calls, want every key HEADed", len(keys), calls)
	}
	f.hooks(failing("HeadObject", "", apiError{"SlowDown"}), nil)
	if keys, _, err := list(); err == nil || keys != nil {
		t.Errorf("a HEAD failing: got %q, %v, want no page and the error", keys, err)
	}
	st, f, c = newFakeStore(t)
	for i := range sweepPage + 1 {
		put(t, st, fmt.Sprintf("a/%04d", i), "v", PutOptions{TTL: 5 * time.Second})
	}
	put(t, st, "b", "v", PutOptions{})
	c.add(6 * time.Second)
	before := f.total()
	if keys, _, err := st.List(context.Background(), "b", "", 10); len(keys) != 1 || f.total()-before != 3 {
		t.Errorf("a backlog past one index page: got %q, %v, %d S3 calls, want the key HEADed (3 calls)", keys, err,
			f.total()-before)
	}
}

// TestWritesRacingADelete: the key goes between kv's HEAD and its conditional write or delete.
func TestWritesRacingADelete(t *testing.T) {
	for _, op := range []string{"PutObject", "DeleteObject"} {
		st, f, _ := newFakeStore(t)
		m := put(t, st, "k", "v", PutOptions{})
		f.hooks(func(_ context.Context, o, key string) error {
			if o == op {
				f.hooks(nil, nil)
				st.Delete(context.Background(), "k", "", nil)
			}
			return nil
		}, nil)
		var err error
		if op == "PutObject" {
			_, err = st.Put(context.Background(), "k", strings.NewReader("x"), 1, PutOptions{Condition: ifMatch(m.ETag)})
		} else {
			err = st.Delete(context.Background(), "k", "", ifMatch(m.ETag))
		}
		if !errors.Is(err, ErrPrecondition) {
			t.Errorf("If-Match racing a delete, at %s: got %v, want ErrPrecondition", op, err)
		}
	}
}

// TestHeadAsksForTheBucketOnlyForAClient: S3 answers a HEAD in a missing bucket as a missing key; only a
// client's HEAD asks for the bucket then. A malformed HEAD's bare 400 is told by a GET of one byte.
func TestHeadAsksForTheBucketOnlyForAClient(t *testing.T) {
	st, f, c := newFakeStore(t)
	put(t, st, "k", "v", PutOptions{TTL: 5 * time.Second})
	c.add(6 * time.Second)
	sweepNow(t, st)
	st.Put(context.Background(), "k", strings.NewReader("v"), 1, PutOptions{Condition: ifMatch("*")})
	if n := f.count("HeadBucket"); n != 1 { // Setup's
		t.Errorf("a sweep and a precondition of a missing key: got %d HeadBucket calls, want none", n-1)
	}
	if _, err := st.Head(context.Background(), "k", ""); !errors.Is(err, ErrNotFound) || f.count("HeadBucket") != 2 {
		t.Errorf("a client's HEAD of a missing key: got %v, %d HeadBucket calls, want ErrNotFound after one", err,
			f.count("HeadBucket")-1)
	}
	f.noBucket = true
	if _, err := st.Head(context.Background(), "k", ""); !errors.Is(err, ErrNoBucket) {
		t.Errorf("a client's HEAD in a missing bucket: got %v, want ErrNoBucket", err)
	}
	f.noBucket = false
	f.hooks(failing("HeadObject", "", apiError{"BadRequest"}), nil) // kv makes no name S3 refuses: S3's fault
	if _, err := st.Head(context.Background(), "k", ""); err == nil || errors.Is(err, ErrBadKey) {
		t.Errorf("a HEAD's bare 400: got %v, want S3's fault, not the key's", err)
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
			if err := st.Delete(ctx, k, "", ifMatch(written[2].ETag)); err != nil { // a conditional delete lays a marker
				t.Fatal(err)
			}
			vs, _, _ = st.Versions(ctx, k, "", 10)
			if _, err := get(t, st, k); !errors.Is(err, ErrNotFound) || len(vs) != 4 || !vs[0].Deleted {
				t.Fatalf("after DELETE: got %v, history %+v, want ErrNotFound, a marker on top of 3 versions", err, vs)
			}
			for range 2 { // idempotent
				if err := st.Delete(ctx, k, written[0].Version, nil); err != nil {
					t.Fatalf("delete version: %v", err)
				}
			}
			for version, want := range map[string]error{written[0].Version: ErrNoVersion, vs[0].Version: ErrNoVersion,
				"abc": ErrBadVersion} {
				if _, err := st.Head(ctx, k, version); !errors.Is(err, want) {
					t.Errorf("HEAD of version %q: got %v, want %v", version, err, want)
				}
			}
			if _, _, err := st.Get(ctx, k, "abc"); !errors.Is(err, ErrBadVersion) {
				t.Errorf("GET of a malformed version: got %v, want ErrBadVersion", err)
			}
			if err := st.Delete(ctx, k, vs[0].Version, nil); err != nil { // removing the marker restores "three"
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
			if err := checkVersionPages(t, st, k); err != nil {
				t.Error(err)
			}
		})
	}
}

// checkVersionPages walks key's history a page of 1, 2 and 3 at a time: every entry once, in the order of the
// whole.
func checkVersionPages(t *testing.T, st *Store, key string) error {
	all, _, err := st.Versions(context.Background(), key, "", 1000)
	for limit := 1; limit <= 3 && err == nil; limit++ {
		var walked []Version
		for after, n := "", 0; n < 50; n++ {
			page, next, err := st.Versions(context.Background(), key, after, limit)
			if err != nil {
				return err
			}
			walked = append(walked, page...)
			if after = next; next == "" {
				break
			}
		}
		if !slices.Equal(walked, all) {
			return fmt.Errorf("pages of %d: got %+v, want %+v", limit, walked, all)
		}
	}
	return err
}

// TestVersionsInS3Order: versions and delete markers of the same second (AWS lists whole seconds; the fake
// gives them all the same time) come out in S3's order, and pages of any size chain without a gap or a repeat.
func TestVersionsInS3Order(t *testing.T) {
	st, f, _ := newFakeStore(t)
	versioned(st, f)
	for i := range 4 {
		put(t, st, "k", strconv.Itoa(i), PutOptions{})
		if i%2 == 0 {
			st.Delete(context.Background(), "k", "", nil)
		}
	}
	vs, _, err := st.Versions(context.Background(), "k", "", 100)
	var got, want []string
	for i, v := range vs {
		got = append(got, v.Version)
		want = append(want, f.history[valueName("k")][len(vs)-1-i].version)
	}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("history: got %q, %v, want S3's order %q", got, err, want)
	}
	if err := checkVersionPages(t, st, "k"); err != nil {
		t.Error(err)
	}
}

func entry(key string, size int) *cacheEntry {
	return &cacheEntry{key: key, value: make([]byte, size)}
}

func TestCacheEvictsLeastRecentlyUsedByBytes(t *testing.T) {
	const each = 10 + entryOverhead // key 1, value 9
	c := newCache(3*each, 0, 0)
	now := time.Now()
	for _, k := range []string{"a", "b", "c"} {
		c.fill(entry(k, 9), 0)
	}
	if e, _ := c.get("a", now); e == nil { // a becomes the most recent
		t.Fatal("a is not cached")
	}
	c.fill(entry("d", 9), 0)
	var keys []string
	for el := c.ll.Front(); el != nil; el = el.Next() {
		keys = append(keys, el.Value.(*cacheEntry).key)
	}
	if !slices.Equal(keys, []string{"d", "a", "c"}) || c.used != 3*each || c.evictions != 1 {
		t.Errorf("after evicting: got %q, %d bytes, %d evictions, want [d a c] (b was least recently used), %d, 1",
			keys, c.used, c.evictions, 3*each)
	}
	c.fill(entry("e", 2*each), 0) // room for nothing else
	if c.used != 3*each-10+1 || c.ll.Len() != 1 {
		t.Errorf("after a large entry: got %d bytes in %d items, want %d in 1", c.used, c.ll.Len(), 3*each-9)
	}
	if newCache(0, 0, 0) != nil {
		t.Error("CACHE_MAX_BYTES=0 did not turn the cache off")
	}
	big := newCache(64<<20, 0, 0)
	if !big.fits(cacheMaxItem-entryOverhead) || big.fits(cacheMaxItem-entryOverhead+1) || c.fits(3*each) {
		t.Errorf("fits: values up to %d bytes (and the cache's size), and no larger, should be cached", cacheMaxItem)
	}
}

// TestCacheCountsWhatItHolds: what the cache counts against CACHE_MAX_BYTES covers what its entries really
// take in memory, small values included, and not by much more.
func TestCacheCountsWhatItHolds(t *testing.T) {
	var before, after runtime.MemStats
	c := newCache(1<<40, 0, 0)
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 20000 {
		m := Meta{Size: 8, ETag: fmt.Sprintf(`"%032x"`, i), ContentType: strings.Clone("application/octet-stream"),
			LastModified: time.Now(), Version: fmt.Sprintf("%036x", i)}
		c.fill(&cacheEntry{key: fmt.Sprintf("users/%d/settings", i), value: slices.Grow([]byte(nil), 8)[:8], meta: m}, 0)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc - before.HeapAlloc); grew > c.used || grew < c.used/2 {
		t.Errorf("20,000 small entries: the heap grew %d bytes, the cache counted %d: want the count to cover it, "+
			"within a factor of two", grew, c.used)
	}
	runtime.KeepAlive(c)
}

func TestCacheExpiryAndFreshness(t *testing.T) {
	now := time.Now()
	c := newCache(1<<20, time.Minute, 0)
	e := entry("ttl", 1)
	e.meta.ExpiresAt, e.stored = now.Add(time.Second), now
	c.fill(e, 0)
	if got, _ := c.get("ttl", now.Add(time.Second-1)); got == nil {
		t.Error("1ns before expiry: not served")
	}
	if got, _ := c.get("ttl", now.Add(time.Second)); got != nil {
		t.Error("at expiry: served from the cache")
	}
	e = entry("fresh", 1)
	e.stored = now
	c.fill(e, 0)
	if got, _ := c.get("fresh", now.Add(time.Minute-1)); got == nil {
		t.Error("within CACHE_TTL: not served")
	}
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
			func(t *testing.T, st *Store) { st.Delete(context.Background(), "k", "", nil) }, ""},
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
	get(t, st, "k")
	get(t, st, "k")
	if n := f.count("GetObject"); n != 2 {
		t.Errorf("S3 GETs: got %d, want 2: the GET during the write must not fill the cache, the next must", n)
	}
}

// TestCacheAfterAnUnknownOutcome: a PUT that S3 does not answer may still be applied later; for the store's
// unsure time no GET fills the cache with what it replaced, and after it the key is cached again.
func TestCacheAfterAnUnknownOutcome(t *testing.T) {
	st, f, _ := newCachedStore(t)
	put(t, st, "k", "old", PutOptions{})
	f.hooks(failing("PutObject", "", errors.New("read tcp: i/o timeout")), nil) // S3 has it; kv has no answer
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
	time.Sleep(st.cache.unsureFor)
	gets := f.count("GetObject")
	get(t, st, "k")
	if get(t, st, "k"); f.count("GetObject") != gets+1 {
		t.Errorf("once the unsure time has passed, the key is not cached again")
	}
}

func TestCacheRace(t *testing.T) {
	st, _, _ := newCachedStore(t)
	st.cache.max = 8 * entryOverhead
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key := fmt.Sprintf("k%d", (w*7+i)%13)
				switch i % 4 {
				case 0:
					put(t, st, key, strings.Repeat("v", i%50), PutOptions{})
				case 3:
					st.Delete(context.Background(), key, "", nil)
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
	if st.cache.used != sum || sum > st.cache.max || st.cache.ll.Len() != len(st.cache.items) || writes != 0 {
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
	h     http.Handler
	st    *Store
	s3    *fakeS3
	m     *metrics
	log   *syncBuffer
	clock *clock
}

// testConfig is kv's configuration as its defaults make it (the cache on), with a small MAX_VALUE_BYTES.
func testConfig() config {
	return config{MaxValueBytes: testMaxValue, CacheMaxBytes: 64 << 20, S3Timeout: time.Second,
		ClientTimeout: time.Second}
}

// newTestServer is kv's handler as run makes it, on a fake bucket.
func newTestServer(t testing.TB, cfg config) *testServer {
	t.Helper()
	st, f, c := newFakeStore(t)
	st.cache, st.timeout = newCache(cfg.CacheMaxBytes, cfg.CacheTTL, cfg.S3Timeout), cfg.S3Timeout
	ts := &testServer{st: st, s3: f, m: newMetrics(st.cache), log: &syncBuffer{}, clock: c}
	log := slog.New(slog.NewJSONHandler(ts.log, nil))
	st.log = log
	ts.h = newServer(log, st, ts.m, cfg)
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
	for _, method := range []string{"GET", "HEAD", "GET"} {
		w = ts.do(method, "/kv/dir/ünï%20k", "")
		if want := map[string]string{"GET": "hello"}[method]; w.Code != 200 || w.Body.String() != want {
			t.Errorf("%s: got %d %q, want 200 %q", method, w.Code, w.Body, want)
		}
		for h, want := range map[string]string{"Content-Type": "text/plain", "Content-Length": "5",
			"ETag": got.ETag, "Cache-Control": "no-cache", "Last-Modified": fakeTime.Format(http.TimeFormat)} {
			if v := w.Header().Get(h); v != want {
				t.Errorf("%s %s: got %q, want %q", method, h, v, want)
			}
		}
	}
	if n := ts.s3.count("GetObject"); n != 1 {
		t.Errorf("S3 GETs for two GETs and a HEAD: got %d, want 1 (HEAD downloads nothing, the cache serves the other)", n)
	}
	if w = ts.do("DELETE", "/kv/dir/ünï%20k", "", "If-Match", got.ETag); w.Code != 204 {
		t.Errorf("DELETE: got %d, want 204", w.Code)
	}
	wantError(t, ts.do("GET", "/kv/dir/ünï%20k", ""), 404) // the cache held it
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
		{"non-ASCII Content-Type", "PUT", "/kv/k", "v", []string{"Content-Type", "text/ünï"}, 400},
		{"Content-Type too long", "PUT", "/kv/k", "v", []string{"Content-Type", "text/" + strings.Repeat("x", 252)}, 400},
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
		{"cursor too long", "GET", "/kv?cursor=" + cursor(strings.Repeat("c", maxObjectKey)), "", nil, 400},
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

// TestPreconditions: every precondition header is evaluated on every method, in RFC 9110's order (§13.2.2),
// against the value's ETag and Last-Modified; a write whose condition fails changes nothing.
func TestPreconditions(t *testing.T) {
	lm := fakeTime.Format(http.TimeFormat)
	before, after := fakeTime.Add(-time.Hour).Format(http.TimeFormat), fakeTime.Add(time.Hour).Format(http.TimeFormat)
	tests := []struct {
		method string
		header []string
		status int
	}{
		{"GET", []string{"If-Match", "ETAG"}, 200}, {"GET", []string{"If-Match", `"other"`}, 412},
		{"GET", []string{"If-Match", "W/ETAG"}, 412}, {"HEAD", []string{"If-Match", `"other"`}, 412},
		{"GET", []string{"If-Match", "6654c7"}, 412}, // unquoted: the 412 says entity tags are quoted
		{"GET", []string{"If-Unmodified-Since", before}, 412}, {"GET", []string{"If-Unmodified-Since", lm}, 200},
		{"GET", []string{"If-Match", "ETAG", "If-Unmodified-Since", before}, 200}, // If-Match decides
		{"GET", []string{"If-None-Match", "ETAG"}, 304}, {"GET", []string{"If-None-Match", "W/ETAG"}, 304},
		{"GET", []string{"If-None-Match", "*"}, 304}, {"HEAD", []string{"If-None-Match", `"a", ETAG`}, 304},
		{"GET", []string{"If-None-Match", `"other"`}, 200}, {"GET", []string{"If-Modified-Since", lm}, 304},
		{"GET", []string{"If-Modified-Since", before}, 200}, {"GET", []string{"If-Modified-Since", "soon"}, 200},
		{"GET", []string{"If-None-Match", `"other"`, "If-Modified-Since", after}, 200}, // If-None-Match decides
		{"GET", []string{"If-Match", `"other"`, "If-None-Match", `"other"`}, 412},
		{"PUT", []string{"If-Unmodified-Since", before}, 412}, {"PUT", []string{"If-Unmodified-Since", lm}, 200},
		{"PUT", []string{"If-None-Match", "*"}, 412}, {"PUT", []string{"If-None-Match", `"other"`}, 200},
		{"PUT", []string{"If-None-Match", "ETAG"}, 412}, {"PUT", []string{"If-Modified-Since", after}, 200},
		{"PUT", []string{"If-Match", `"other"`}, 412}, {"PUT", []string{"If-Match", "ETAG"}, 200},
		{"DELETE", []string{"If-None-Match", "*"}, 412}, {"DELETE", []string{"If-Unmodified-Since", before}, 412},
		{"DELETE", []string{"If-Match", "6654c7"}, 412}, {"DELETE", []string{"If-Match", "ETAG"}, 204},
		{"DELETE", []string{"If-None-Match", `"other"`}, 204},
	}
	for _, tt := range tests {
		ts := newTestServer(t, testConfig())
		etag := ts.do("PUT", "/kv/k", "v").Header().Get("ETag")
		header := slices.Clone(tt.header)
		for i := range header {
			header[i] = strings.ReplaceAll(header[i], "ETAG", etag)
		}
		w := ts.do(tt.method, "/kv/k", "new", header...)
		if w.Code == 412 && !strings.Contains(w.Body.String(), "in quotes") && tt.method != "HEAD" {
			t.Errorf("%s %q: 412 without the hint that entity tags are quoted: %s", tt.method, header, w.Body)
		}
		got, _ := get(t, ts.st, "k")
		if w.Code != tt.status || tt.status == 412 && tt.method != "GET" && tt.method != "HEAD" && got != "v" {
			t.Errorf("%s %q: got %d, value %q, want %d (and the value as it was on 412)", tt.method, header, w.Code,
				got, tt.status)
		}
	}
	ts := newTestServer(t, testConfig())
	if w := ts.do("DELETE", "/kv/k", "", "If-None-Match", "*"); w.Code != 204 {
		t.Errorf("DELETE If-None-Match: * of an absent key: got %d, want 204", w.Code)
	}
	if w := ts.do("PUT", "/kv/k", "v", "If-None-Match", "*", "If-Unmodified-Since", before); w.Code != 200 {
		t.Errorf("PUT If-None-Match: * of an absent key, If-Unmodified-Since before: got %d, want 200", w.Code)
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
		{"a delete refused", apiError{"MethodNotAllowed"}, 503},
		{"key too long for the backend", apiError{"KeyTooLongError"}, 400},
	}
	requests := [][]string{{"PUT", "/kv/private-customer-key"}, {"GET", "/kv/private-customer-key"},
		{"HEAD", "/kv/private-customer-key"}, {"DELETE", "/kv/private-customer-key"},
		{"DELETE", "/kv/private-customer-key", "If-Match", "*"}, {"GET", "/kv?prefix=private-customer-key"}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, testConfig())
			ts.do("PUT", "/kv/private-customer-key", "v")
			ts.s3.noBucket = tt.name == "bucket removed"
			if !ts.s3.noBucket {
				ts.s3.hooks(func(context.Context, string, string) error { return tt.err }, nil)
			}
			for _, r := range requests {
				w := ts.do(r[0], r[1], "secret-value-42", r[2:]...)
				if r[1] == "/kv?prefix=private-customer-key" && tt.status == 400 {
					continue // a listing names no object
				}
				if r[0] == "HEAD" && w.Code == tt.status { // no body
					continue
				}
				if len(r) > 2 && ts.s3.noBucket { // If-Match on a key S3 says is absent fails there and then
					wantError(t, w, 412)
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

// realS3 is a store on the S3 at endpoint through the real S3 client, whose calls are counted in m and logged
// at debug in logs.
func realS3(t *testing.T, endpoint string, timeout time.Duration) (*Store, *metrics, *syncBuffer) {
	cfg := config{Bucket: "kv-test", Endpoint: endpoint, AccessKey: "k", SecretKey: "s", Region: "us-east-1",
		S3Timeout: timeout, ClientTimeout: time.Second}
	m, logs := newMetrics(nil), &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	client, err := newS3Client(context.Background(), cfg, m, log)
	if err != nil {
		t.Fatal(err)
	}
	return newStore(client, log, cfg.Bucket, cfg.S3Timeout, nil), m, logs
}

// TestTransportErrorsNameTheCauseNotTheKey: the S3 client's own errors carry the request URL, which names the
// key; the log must not. A PUT while S3 is down says the connection was refused, and each S3 call is counted
// and, at debug, logged.
func TestTransportErrorsNameTheCauseNotTheKey(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // nothing listens there now: every S3 call is refused
	st, m, logs := realS3(t, "http://"+ln.Addr().String(), 2*time.Second)
	h := newServer(st.log, st, m, config{MaxValueBytes: 100, ClientTimeout: time.Second})
	for _, method := range []string{"GET", "PUT"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, "/kv/private-customer-key", strings.NewReader("v")))
		if w.Code != 503 {
			t.Errorf("%s with S3 refusing: got %d, want 503", method, w.Code)
		}
	}
	if n := strings.Count(logs.String(), "connection refused"); n < 2 || strings.Contains(logs.String(), "private-customer-key") ||
		strings.Contains(logs.String(), "rewind") || !strings.Contains(logs.String(), `"msg":"s3 call","operation":"PutObject"`) {
		t.Errorf("log:\n%s\nwant the cause (connection refused) for both, each call at debug, and no key", logs)
	}
	if m.s3[series{operation: "GetObject"}] == nil || m.s3[series{operation: "PutObject"}] == nil {
		t.Error("the failed S3 calls were not counted under their operations")
	}
}

// TestStallingS3: an S3 that stops answering mid-call (before its answer, in the middle of a value's
// body, or while taking an upload) fails the call within about S3_TIMEOUT, saying so: nothing hangs.
func TestStallingS3(t *testing.T) {
	stop := make(chan struct{})
	s3srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" {
			w.Header().Set("Content-Length", "100")
			w.Write([]byte("0123456789"))
			w.(http.Flusher).Flush()
		}
		<-stop // a HEAD waits for its answer; a PUT's body is not read
	}))
	defer s3srv.Close()
	defer close(stop)
	st, _, _ := realS3(t, s3srv.URL, 300*time.Millisecond)
	calls := map[string]func() error{
		"HEAD": func() error { _, err := st.Head(context.Background(), "k", ""); return err },
		"GET": func() error {
			body, _, err := st.Get(context.Background(), "k", "")
			if err == nil {
				_, err = io.ReadAll(body)
			}
			return err
		},
		"PUT": func() error {
			big := bytes.NewReader(make([]byte, 64<<20)) // more than the sockets' buffers hold
			_, err := st.Put(context.Background(), "k", big, big.Size(), PutOptions{})
			return err
		},
	}
	for name, call := range calls {
		t0 := time.Now()
		err := call()
		if took := time.Since(t0); err == nil || took > 3*time.Second {
			t.Errorf("%s with S3 stalled: got %v after %v, want an error within about S3_TIMEOUT (300ms)", name, err, took)
		}
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
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // the test's own bound, far past kv's
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
	ts.s3.hooks(func(context.Context, string, string) error {
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
	cfg.ClientTimeout, cfg.MaxValueBytes = 200*time.Millisecond, 64<<20
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
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	io.WriteString(c, "GET /kv/big HTTP/1.1\r\nHost: kv\r\n\r\n") // and read nothing
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

// TestSlowButSteadyClients: a client that reads or writes slowly but on is never cut off, however long the
// whole takes: each read and write has CLIENT_TIMEOUT to make progress, not the request. A PUT sent with
// "Expect: 100-continue" is answered although kv's S3 work before the body outlasts CLIENT_TIMEOUT.
func TestSlowButSteadyClients(t *testing.T) {
	cfg := testConfig()
	cfg.ClientTimeout, cfg.MaxValueBytes, cfg.S3Timeout = time.Second, 64<<20, 10*time.Second
	ts := newTestServer(t, cfg)
	addr := ts.serve(t, cfg.ClientTimeout)
	ts.do("PUT", "/kv/big", strings.Repeat("v", 16<<20))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	io.WriteString(c, "GET /kv/big HTTP/1.1\r\nHost: kv\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	got := int64(0)
	for err == nil { // 2.5 MB/s: 16 MiB takes 6 s, six times CLIENT_TIMEOUT
		n, rerr := io.CopyN(io.Discard, resp.Body, 64<<10)
		got, err = got+n, rerr
		time.Sleep(25 * time.Millisecond)
	}
	if got != 16<<20 || err != io.EOF {
		t.Errorf("a slow but steady reader: got %d bytes, %v, want all %d", got, err, 16<<20)
	}
	pr, pw := io.Pipe()
	go func() {
		for range 12 { // a byte every 150 ms: 1.8 s in all
			time.Sleep(150 * time.Millisecond)
			pw.Write([]byte("x"))
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("PUT", "http://"+addr+"/kv/slow", pr)
	req.ContentLength = 12
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("a slow but steady upload: got %v, %v, want 200", resp, err)
	}
	ts.s3.hooks(func(_ context.Context, op, key string) error {
		if op == "PutObject" && strings.HasPrefix(key, indexPrefix) {
			time.Sleep(2 * cfg.ClientTimeout) // the TTL's index entry goes before the body is read
		}
		return nil
	}, nil)
	req, _ = http.NewRequest("PUT", "http://"+addr+"/kv/expecting?ttl=1h", strings.NewReader("hello"))
	req.Header.Set("Expect", "100-continue")
	if resp, err := (&http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}).Do(req); err != nil ||
		resp.StatusCode != 200 {
		t.Errorf("Expect: 100-continue after slow S3 work: got %v, %v, want 200", resp, err)
	}
}

// TestValueLength: every value answer carries its length from the start, so a stream S3 breaks mid-value
// reaches the client broken, never as a shorter value.
func TestValueLength(t *testing.T) {
	cfg := testConfig()
	cfg.CacheMaxBytes = 0 // a cached value is read whole first: a break is a 503
	ts := newTestServer(t, cfg)
	ts.do("PUT", "/kv/k", "0123456789")
	ts.s3.truncate = 4
	resp, err := http.Get("http://" + ts.serve(t, time.Second) + "/kv/k")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.ContentLength != 10 || err == nil {
		t.Errorf("a broken stream: got length %d, %q, %v, want length 10 and a read error", resp.ContentLength, body, err)
	}
}

// TestReady: /readyz asks S3 at most once a second however many probe at once, answers within a second
// however long S3 takes, and logs each change.
func TestReady(t *testing.T) {
	cfg := testConfig()
	cfg.S3Timeout = 10 * time.Second
	ts := newTestServer(t, cfg)
	heads := ts.s3.count("HeadBucket")
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if w := ts.do("GET", "/readyz", ""); w.Code != 200 || w.Body.String() != "{\"status\":\"ready\"}\n" {
				t.Errorf("readyz: got %d %s", w.Code, w.Body)
			}
		})
	}
	wg.Wait()
	if n := ts.s3.count("HeadBucket") - heads; n != 1 {
		t.Errorf("20 probes at once made %d HeadBucket calls, want 1 (at most one a second)", n)
	}
	for _, stalled := range []bool{true, false} {
		if stalled {
			ts.s3.hooks(stall("HeadBucket"), nil)
		} else {
			ts.s3.hooks(nil, nil)
		}
		time.Sleep(time.Second) // the next probe checks again
		t0 := time.Now()
		w := ts.do("GET", "/readyz", "")
		if w.Code != map[bool]int{true: 503, false: 200}[stalled] || time.Since(t0) > 3*time.Second {
			t.Errorf("S3 stalled %v: got %d after %v, want 503 while stalled, within a second or so", stalled, w.Code,
				time.Since(t0))
		}
	}
	if n := strings.Count(ts.log.String(), `"msg":"readiness changed"`); n != 2 {
		t.Errorf("readiness changed twice: got %d log lines, want 2", n)
	}
	if w := ts.do("GET", "/healthz", ""); w.Code != 200 {
		t.Errorf("healthz: got %d, want 200", w.Code)
	}
}

// TestSetup: kv waits for an S3 that is not up yet, and stops at once, saying why, on what waiting cannot
// mend.
func TestSetup(t *testing.T) {
	refused := errors.New("dial tcp: connection refused")
	tests := []struct {
		name     string
		answers  map[string][]error // each operation's first answers, in turn; then the fake's own
		versions bool
		ignored  bool // the S3 does not turn versioning on
		want     string
	}{
		{"S3 not up yet", map[string][]error{"HeadBucket": {refused, refused}}, false, false, ""},
		{"no bucket: created", map[string][]error{"HeadBucket": {apiError{"NotFound"}}}, true, false, ""},
		{"wrong credentials", map[string][]error{"HeadBucket": {apiError{"Forbidden"}}}, false, false,
			"check S3_ACCESS_KEY and S3_SECRET_KEY"},
		{"creating the bucket denied", map[string][]error{"HeadBucket": {apiError{"NotFound"}},
			"CreateBucket": {apiError{"AccessDenied"}}}, false, false, "S3 refused kv's credentials"},
		{"reading versioning denied", map[string][]error{"GetBucketVersioning": {apiError{"AccessDenied"}}}, false,
			false, "S3 refused kv's credentials"},
		{"versioning ignored", nil, true, true, "S3_VERSIONING=true, but the S3 did not turn versioning on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeS3()
			var mu sync.Mutex
			f.before = func(_ context.Context, op, key string) error {
				mu.Lock()
				defer mu.Unlock()
				if len(tt.answers[op]) == 0 {
					return nil
				}
				err := tt.answers[op][0]
				tt.answers[op] = tt.answers[op][1:]
				return err
			}
			if tt.ignored {
				f.after = func(op, key string) { f.mu.Lock(); f.versioned = false; f.mu.Unlock() }
			}
			st := newStore(f, slog.New(slog.DiscardHandler), "test", time.Second, nil)
			cfg := config{Bucket: "test", StartupTimeout: 30 * time.Second, Versioning: tt.versions}
			err := setup(context.Background(), slog.New(slog.DiscardHandler), st, cfg)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
			if tt.want != "" && f.count("HeadBucket") > 1 {
				t.Errorf("HeadBucket calls: got %d, want 1 (no retry after a final answer)", f.count("HeadBucket"))
			}
		})
	}
}

// TestShutdownCutsOffWhatOutlastsIt: requests still running at SHUTDOWN_TIMEOUT are counted and the timeout
// named, and each still gets its access line.
func TestShutdownCutsOffWhatOutlastsIt(t *testing.T) {
	m, logs := newMetrics(nil), &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	release := make(chan struct{})
	h := withRequestLog(log, m, time.Second, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.WriteHeader(http.StatusNoContent)
	}))
	srv := httpServer(h, log, time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	go http.Get("http://" + ln.Addr().String() + "/")
	for m.inFlight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	go func() {
		for !strings.Contains(logs.String(), "shutdown incomplete") {
			time.Sleep(time.Millisecond)
		}
		close(release) // the handler ends after its connection was closed
	}()
	err = shutdown(log, srv, m, config{ShutdownTimeout: 50 * time.Millisecond, S3Timeout: 10 * time.Second})
	if want := "SHUTDOWN_TIMEOUT (50ms) ran out: 1 requests cut off"; err == nil ||
		!strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
	if !strings.Contains(logs.String(), `"msg":"request"`) {
		t.Errorf("the request cut off has no access line:\n%s", logs)
	}
}

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name, variable, value, want string // want: the error; "" for none
	}{
		{"defaults", "", "", ""},
		{"no bucket", "S3_BUCKET", "", "S3_BUCKET is required"},
		{"short bucket", "S3_BUCKET", "ab", `S3_BUCKET="ab": must be a bucket name`},
		{"access key alone", "S3_ACCESS_KEY", "k", "set both S3_ACCESS_KEY and S3_SECRET_KEY"},
		{"secret key alone", "S3_SECRET_KEY", "s", "set both S3_ACCESS_KEY and S3_SECRET_KEY"},
		{"endpoint without scheme", "S3_ENDPOINT", "127.0.0.1:9000",
			`S3_ENDPOINT="127.0.0.1:9000": must be a URL with no path, such as http://minio:9000`},
		{"endpoint of another scheme", "S3_ENDPOINT", "minio:9000", "must be a URL with no path"},
		{"endpoint with a path", "S3_ENDPOINT", "http://127.0.0.1:9000/kv-data", "must be a URL with no path"},
		{"endpoint with a slash", "S3_ENDPOINT", "http://127.0.0.1:9000/", ""},
		{"bad port", "PORT", "http", `PORT="http": must be a port number from 1 to 65535`},
		{"port zero", "PORT", "0", "must be a port number"}, {"port out of range", "PORT", "70000", "must be a port"},
		{"timeout without unit", "S3_TIMEOUT", "10", `S3_TIMEOUT="10": must be a positive duration such as 10s or 1m`},
		{"zero timeout", "CLIENT_TIMEOUT", "0s", "must be a positive duration"},
		{"negative cache ttl", "CACHE_TTL", "-1s", `CACHE_TTL="-1s": must be a duration such as 30s, or 0`},
		{"size with a unit", "CACHE_MAX_BYTES", "64MiB",
			`CACHE_MAX_BYTES="64MiB": must be a whole number of bytes, e.g. 67108864`},
		{"negative size", "MAX_VALUE_BYTES", "-1", "must be a whole number of bytes up to S3's 5 GiB"},
		{"value larger than S3 takes", "MAX_VALUE_BYTES", "5368709121", "up to S3's 5 GiB"},
		{"largest value S3 takes", "MAX_VALUE_BYTES", "5368709120", ""},
		{"bad level", "LOG_LEVEL", "loud", `LOG_LEVEL="loud": must be debug, info, warn or error`},
		{"bad bool", "S3_VERSIONING", "yes", `S3_VERSIONING="yes": must be true or false`},
		{"token of spaces", "AUTH_TOKEN", " ", `AUTH_TOKEN=" ": must be printable ASCII without spaces`},
		{"cache off", "CACHE_MAX_BYTES", "0", ""}, {"sweep off", "TTL_SWEEP_INTERVAL", "0", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"S3_BUCKET": "kv-data", tt.variable: tt.value}
			c, err := loadConfig(func(k string) string { return env[k] })
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
			if tt.name == "defaults" && (c.Port != 8080 || c.Region != "us-east-1" || c.MaxValueBytes != 25<<20 ||
				c.S3Timeout != 10*time.Second || c.SweepInterval != time.Minute || c.LogLevel != slog.LevelInfo) {
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

// TestStartingMistakes: kv says first what it runs against; an S3 that speaks no TLS at an https endpoint,
// and no credentials anywhere, stop it at once, saying so (the AWS SDK's metadata service is off here: no
// request leaves the machine).
func TestStartingMistakes(t *testing.T) {
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	var out syncBuffer
	env := map[string]string{"S3_BUCKET": "kv-data", "S3_ENDPOINT": "https://" + plain.Listener.Addr().String(),
		"S3_ACCESS_KEY": "k", "S3_SECRET_KEY": "s", "GOGC": "100", "AUTH_TOKEN": "t0k", "STARTUP_TIMEOUT": "10s"}
	t0 := time.Now()
	err := run(context.Background(), func(k string) string { return env[k] }, &out)
	first, _, _ := strings.Cut(out.String(), "\n")
	if err == nil || !strings.Contains(err.Error(), "TLS") || time.Since(t0) > 20*time.Second {
		t.Errorf("https to a plain S3: got %v after %v, want a TLS error at once", err, time.Since(t0))
	}
	for _, field := range []string{`"msg":"starting"`, `"s3":"https://`, `"bucket":"kv-data"`, `"versioning":false`,
		`"cache_max_bytes":67108864`, `"auth_token":true`} {
		if !strings.Contains(first, field) || strings.Contains(first, "t0k") {
			t.Errorf("first log line %s: want %s, and no token", first, field)
		}
	}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	_, err = newS3Client(context.Background(), config{Region: "us-east-1", S3Timeout: time.Second}, newMetrics(nil),
		slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "S3_ACCESS_KEY is unset") {
		t.Errorf("no credentials anywhere: got %v, want an error naming S3_ACCESS_KEY", err)
	}
}

// scrape reads /metrics, every line of which must be a comment or a sample of the text format.
func scrape(t *testing.T, h http.Handler, header ...string) string {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest("GET", "/metrics", nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	h.ServeHTTP(w, r)
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

// TestMetrics: each request is counted under the route the access line names, in the bucket its time falls
// in; the cache's hits, misses and size are its own; labels never hold a key.
func TestMetrics(t *testing.T) {
	cfg := testConfig()
	cfg.AuthToken = "t0k"
	ts := newTestServer(t, cfg)
	auth := []string{"Authorization", "Bearer t0k"}
	ts.do("PUT", "/kv/k", "v", auth...)
	for _, target := range []string{"/kv/k", "/kv/k", "/kv/private-missing", "/kv/private-missing", "/kv/a//b"} {
		ts.do("GET", target, "", auth...)
	}
	ts.do("BREW", "/kv/k", "", auth...)
	ts.do("GET", "/kv/k", "")
	ts.m.observe(ts.m.http, series{route: "test", method: "GET", code: 200}, 3*time.Millisecond)
	body := scrape(t, ts.h, auth...)
	for _, line := range []string{
		`http_request_duration_seconds_count{route="PUT /kv/{key...}",method="PUT",code="200"} 1`,
		`http_request_duration_seconds_count{route="GET /kv/{key...}",method="GET",code="200"} 2`,
		`http_request_duration_seconds_count{route="GET /kv/{key...}",method="GET",code="404"} 2`,
		`http_request_duration_seconds_bucket{route="GET /kv/{key...}",method="GET",code="404",le="+Inf"} 2`,
		`http_request_duration_seconds_count{route="unmatched",method="GET",code="400"} 1`,
		`http_request_duration_seconds_count{route="unmatched",method="GET",code="401"} 1`,
		`http_request_duration_seconds_count{route="/kv/{key...}",method="other",code="405"} 1`,
		`http_request_duration_seconds_bucket{route="test",method="GET",code="200",le="0.0025"} 0`,
		`http_request_duration_seconds_bucket{route="test",method="GET",code="200",le="0.005"} 1`,
		`http_request_duration_seconds_sum{route="test",method="GET",code="200"} 0.003`,
		`http_requests_in_flight 1`, `kv_cache_items 1`, `kv_cache_hits_total 1`, `kv_cache_misses_total 3`,
		fmt.Sprintf("kv_cache_bytes %d", 1+cap(slices.Grow([]byte(nil), 1))+entryOverhead),
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
	if strings.Contains(body, "private-missing") {
		t.Error("a key reached a metric label")
	}
	if !strings.Contains(ts.log.String(), `"route":"unmatched","status":401`) {
		t.Errorf("the 401's access line does not name the route its metric counts it under:\n%s", ts.log)
	}
}

// blockedWriter is a client that takes nothing of the answer until released.
type blockedWriter struct {
	*httptest.ResponseRecorder
	writing, release chan struct{}
}

func (w blockedWriter) Write(p []byte) (int, error) {
	close(w.writing)
	<-w.release
	return w.ResponseRecorder.Write(p)
}

// TestScrapeHoldsNoLock: a scrape whose client takes nothing holds no lock that a request needs.
func TestScrapeHoldsNoLock(t *testing.T) {
	ts := newTestServer(t, testConfig())
	ts.do("PUT", "/kv/k", "v")
	w := blockedWriter{httptest.NewRecorder(), make(chan struct{}), make(chan struct{})}
	defer close(w.release)
	go ts.m.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	<-w.writing
	done := make(chan int)
	go func() { done <- ts.do("GET", "/kv/k", "").Code }()
	select {
	case code := <-done:
		if code != 200 {
			t.Errorf("GET during a blocked scrape: got %d, want 200", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a GET waited for a scrape that its client does not read")
	}
}

// TestSweeper: the sweeper loop sweeps every interval, counts what it reclaimed, logs it, and stops with its
// context.
func TestSweeper(t *testing.T) {
	st, _, c := newFakeStore(t)
	for i := range 3 {
		put(t, st, fmt.Sprint(i), "v", PutOptions{TTL: 5 * time.Second})
	}
	c.add(6 * time.Second)
	m, logs := newMetrics(nil), &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sweep(ctx, slog.New(slog.NewJSONHandler(logs, nil)), st, m, 10*time.Millisecond)
	}()
	for deadline := time.Now().Add(10 * time.Second); m.reclaimed.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if m.reclaimed.Load() != 3 || !strings.Contains(logs.String(), `"msg":"ttl sweep","deleted":3`) {
		t.Errorf("reclaimed: got %d, log:\n%s\nwant 3, logged", m.reclaimed.Load(), logs)
	}
}

// longKey is the longest key that always fits, of segments MinIO takes.
var longKey = strings.Repeat(strings.Repeat("k", 250)+"/", 4) + strings.Repeat("k", maxObjectKey-15-4*251)

func TestCheckKey(t *testing.T) {
	fits := longKey
	tests := []struct {
		key    string
		prefix bool
		ok     bool
	}{
		{"a", false, true}, {"a/b", false, true}, {"ünï/cødé", false, true}, {".hidden/..x/x..", false, true},
		{fits, false, true}, {fits + "k", false, false}, {"!" + fits[1:], false, false},
		{strings.Repeat("s", 254) + "/s", false, true}, {strings.Repeat("s", 255) + "/s", false, false},
		{"s/" + strings.Repeat("!", 127), false, true}, {"s/" + strings.Repeat("!", 128), false, false},
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
	if n := len(indexKey(fits, time.Now(), true)); n != maxObjectKey {
		t.Errorf("the index entry of the longest key that fits: got %d bytes, want %d", n, maxObjectKey)
	}
}

func TestVersionRequests(t *testing.T) {
	ts := newTestServer(t, testConfig())
	ts.s3.versioned = true
	if err := ts.st.Setup(context.Background(), false); err != nil || !ts.st.versioned {
		t.Fatalf("an already versioned bucket was not noticed: %v", err)
	}
	var first struct{ Version string }
	json.Unmarshal(ts.do("PUT", "/kv/k", "one").Body.Bytes(), &first)
	ts.do("PUT", "/kv/k", "two")
	ts.do("GET", "/kv/k", "") // the cache holds two
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
		"/kv/k?version=nonsense": 400, "/kv/k?version=v9999": 404, "/kv/k?version=v0001&versions": 400} {
		wantError(t, ts.do("GET", target, ""), status)
	}
	if w := ts.do("GET", "/kv/k?version=v9999", ""); !strings.Contains(w.Body.String(), "version not found") {
		t.Errorf("an unknown version: got %s, want it named as such", w.Body)
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
