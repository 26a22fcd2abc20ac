package main

import (
	"container/list"
	"sync"
	"sync/atomic"
	"time"
)

// cacheMaxItem is the largest value the cache keeps: larger ones stream from S3 every time.
const cacheMaxItem = 1 << 20

// cache is an LRU of small values, bounded in bytes (key plus value).
//
// Concurrency: one mutex guards the list, the map, the byte count and the in-flight fetches; it is held only
// for map and list updates, never during I/O. Entries are immutable once added, so a reader may use one after
// the lock is released. Every write or delete through the store bumps gen and drops the key's in-flight fetch,
// and a fetch may only add its result if gen has not moved since it started: a value a write has replaced is
// never cached after that write returns.
type cache struct {
	mu       sync.Mutex
	max      int64
	used     int64
	freshFor time.Duration // 0: entries stay until evicted or replaced
	ll       *list.List    // front: most recently used
	items    map[string]*list.Element
	fetches  map[string]*fetch
	gen      uint64

	hits, misses, evictions atomic.Int64
}

type cacheEntry struct {
	key    string
	value  []byte
	meta   Meta
	stored time.Time
}

// fetch is one S3 GET of a key that concurrent misses wait for instead of asking S3 again.
type fetch struct {
	done  chan struct{}
	entry *cacheEntry // nil: too large to share, or failed
	err   error
}

func newCache(maxBytes int64, freshFor time.Duration) *cache {
	if maxBytes <= 0 {
		return nil
	}
	return &cache{max: maxBytes, freshFor: freshFor, ll: list.New(), items: map[string]*list.Element{},
		fetches: map[string]*fetch{}}
}

func (c *cache) fits(size int64) bool { return size <= min(cacheMaxItem, c.max) }

// get returns a live entry for key, or starts a fetch (leader true: the caller must call finish) or returns
// the fetch already under way to wait on.
func (c *cache) get(key string, now time.Time) (e *cacheEntry, f *fetch, leader bool, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cacheEntry)
		expired := !e.meta.ExpiresAt.IsZero() && !now.Before(e.meta.ExpiresAt)
		if !expired && (c.freshFor == 0 || now.Sub(e.stored) < c.freshFor) {
			c.ll.MoveToFront(el)
			c.hits.Add(1)
			return e, nil, false, 0
		}
		c.removeLocked(el)
	}
	c.misses.Add(1)
	if f, ok := c.fetches[key]; ok {
		return nil, f, false, 0
	}
	f = &fetch{done: make(chan struct{})}
	c.fetches[key] = f
	return nil, f, true, c.gen
}

// finish publishes a leader's fetch to its waiters and caches its entry unless a write came since gen.
func (c *cache) finish(key string, f *fetch, gen uint64) {
	c.mu.Lock()
	if c.fetches[key] == f {
		delete(c.fetches, key)
	}
	if f.entry != nil && c.gen == gen {
		c.addLocked(f.entry)
	}
	c.mu.Unlock()
	close(f.done)
}

// put caches e after a successful write (e nil: drops the key, for a delete or a failed write).
func (c *cache) put(key string, e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.fetches, key) // later readers must not join a fetch that began before this write
	if el, ok := c.items[key]; ok {
		c.removeLocked(el)
	}
	if e != nil && c.fits(int64(len(e.value))) {
		c.addLocked(e)
	}
}

func (c *cache) addLocked(e *cacheEntry) {
	if el, ok := c.items[e.key]; ok {
		c.removeLocked(el)
	}
	c.items[e.key] = c.ll.PushFront(e)
	c.used += entrySize(e)
	for c.used > c.max {
		c.removeLocked(c.ll.Back())
		c.evictions.Add(1)
	}
}

func (c *cache) removeLocked(el *list.Element) {
	e := c.ll.Remove(el).(*cacheEntry)
	delete(c.items, e.key)
	c.used -= entrySize(e)
}

func entrySize(e *cacheEntry) int64 { return int64(len(e.key) + len(e.value)) }

// stats returns the bytes and entries held.
func (c *cache) stats() (bytes int64, items int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used, c.ll.Len()
}
