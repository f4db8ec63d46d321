//! Where cached responses live, behind `pingora-cache`'s `Storage` trait:
//!
//! - [`Local`]: this process's memory, bounded in entries (`maxCacheEntries`)
//!   and bytes (`maxCacheSize`), least recently used out first;
//! - [`Shared`]: the configured Redis (`distributed: true`), so every
//!   gateway process serves what one of them fetched; bounded in entries
//!   by an index of expiry times (soonest to expire out first), each entry
//!   expiring in Redis with its freshness (twice that with a validator, to
//!   be revalidated: [`kept_for`]).
//!
//! `pingora-cache` wants `&'static` storage: one store per policy instance
//! (its scope), made once and kept for the process's life, so a reload
//! keeps what was cached (new limits apply to the same store).
//!
//! An entry larger than [`MAX_ENTRY`] is never stored: the response still
//! streams to the client whole (we do not use `pingora-cache`'s own size
//! limit, which cuts such a response off mid-body).

use crate::store::{Redis, RedisSettings};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};
use pingora_cache::key::{CacheHashKey, CacheKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::CacheMeta;
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Flex stores no response over 1 MB.
pub const MAX_ENTRY: usize = 1 << 20;

/// A policy instance's store.
#[derive(Clone, Copy)]
pub enum Store {
    Local(&'static Local),
    Shared(&'static Shared),
}

impl Store {
    pub fn storage(self) -> &'static (dyn Storage + Sync) {
        match self {
            Store::Local(l) => l,
            Store::Shared(s) => s,
        }
    }

    /// Drop the entry for this key (and so every variant made before its
    /// replacement: `pingora-cache` serves a `Vary` variant only if it is
    /// newer than the key's first entry).
    pub async fn invalidate(self, key: &CacheKey) -> Result<()> {
        let span = pingora_cache::trace::Span::inactive().handle();
        let target = key.to_compact();
        self.storage()
            .purge(PurgeTarget::Active(&target), PurgeType::Invalidation, &span)
            .await
            .map(|_| ())
    }

    /// Drop every entry.
    pub async fn invalidate_all(self) -> Result<()> {
        match self {
            Store::Local(l) => {
                l.clear();
                Ok(())
            }
            Store::Shared(s) => s.clear().await,
        }
    }
}

/// What a stored response's `CacheMeta` holds that we keep: its head and
/// freshness. Nothing expired is served without asking the backend (no
/// stale windows): an expired entry is revalidated with its validators
/// (`pingora-cache` sends `If-None-Match` / `If-Modified-Since`; a `304`
/// refreshes the entry and the stored body is served) or fetched anew.
struct Head {
    fresh_until: SystemTime,
    created: SystemTime,
    header: ResponseHeader,
    variance: Option<HashBinary>,
}

impl Head {
    fn of(meta: &CacheMeta) -> Head {
        Head {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            variance: meta.variance(),
            header: compact(meta.response_header()),
        }
    }

    fn meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(self.fresh_until, self.created, 0, 0, self.header.clone());
        if let Some(v) = self.variance {
            meta.set_variance(v);
        }
        meta
    }
}

/// A copy of `h` whose header names and values live in one buffer of
/// their exact size. The upstream's parsed header points into Pingora's
/// read buffer (4 KB or more): an entry holding it would keep that buffer
/// alive, and memory would be ten times and more what `maxCacheSize`
/// counts for small responses.
fn compact(h: &ResponseHeader) -> ResponseHeader {
    let case = h.has_case();
    let mut pairs: Vec<(&[u8], &HeaderValue)> = Vec::with_capacity(h.headers.len());
    match case {
        true => pairs.extend(h.case_header_iter().map(|(n, v)| (n.as_slice(), v))),
        false => pairs.extend(h.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v))),
    }
    let mut buf = BytesMut::with_capacity(pairs.iter().map(|(n, v)| n.len() + v.len()).sum());
    for (n, v) in &pairs {
        buf.extend_from_slice(n);
        buf.extend_from_slice(v.as_bytes());
    }
    let buf = buf.freeze();
    let build = match case {
        true => ResponseHeader::build,
        false => ResponseHeader::build_no_case,
    };
    let mut out = build(h.status, Some(pairs.len())).expect("a valid status");
    out.set_version(h.version);
    let _ = out.set_reason_phrase(h.get_reason_phrase());
    let mut at = 0;
    for (n, v) in &pairs {
        let name = buf.slice(at..at + n.len());
        at += n.len();
        let value = HeaderValue::from_maybe_shared(buf.slice(at..at + v.len()))
            .unwrap_or_else(|_| (*v).clone());
        at += v.len();
        // the names were valid in `h`: nothing here can fail
        let _ = out.append_header(name, value);
    }
    out
}

/// A stored response: its head, freshness and body.
struct Entry {
    head: Head,
    body: Bytes,
    size: usize,
}

impl Entry {
    /// Its size as counted against `maxCacheSize`: what it holds in
    /// memory, measured (RSS per entry of 10,000 small responses): the
    /// body, each header line's bytes plus its two header maps' buckets
    /// (about 224 bytes a line), and the rest of the entry and the LRU's
    /// bookkeeping (about 768 bytes).
    fn new(head: Head, body: Bytes) -> Entry {
        let bytes: usize = head
            .header
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 224)
            .sum();
        Entry {
            size: body.len() + bytes + 768,
            head,
            body,
        }
    }
}

/// The body of a hit: one read of the whole body, or of the range
/// `pingora-cache` seeks to (a client's `Range`, each part of a multipart
/// one in turn), then the end. Slices share the stored bytes.
struct Hit {
    body: Bytes,
    range: std::ops::Range<usize>,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(None);
        }
        Ok(Some(self.body.slice(self.range.clone())))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        if start >= len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start {start} past the body's {len} bytes"),
            );
        }
        // an end past the body is allowed: the body's end
        self.range = start..end.map_or(len, |e| e.min(len)).max(start);
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

fn hit(body: Bytes) -> HitHandler {
    Box::new(Hit {
        range: 0..body.len(),
        body,
        done: false,
    })
}

/// A response being stored as it streams: kept up to [`MAX_ENTRY`], given
/// up past it.
struct Fill {
    into: Store,
    key: HashBinary,
    head: Head,
    chunks: Vec<Bytes>,
    size: usize,
    too_big: bool,
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.too_big {
            return Ok(());
        }
        self.size += data.len();
        if self.size > MAX_ENTRY {
            // not stored; the client still gets all of it
            self.too_big = true;
            self.chunks = Vec::new();
            super::COUNTS.too_big.inc();
            return Ok(());
        }
        if !data.is_empty() {
            self.chunks.push(data);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        if self.too_big {
            return Ok(MissFinishType::Created(0));
        }
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => Bytes::from(self.chunks.concat()),
        };
        let size = body.len();
        match self.into {
            Store::Local(l) => l.insert(self.key, Entry::new(self.head, body)),
            Store::Shared(s) => s.put(self.key, &self.head.meta(), &body).await?,
        }
        Ok(MissFinishType::Created(size))
    }
}

fn fill(into: Store, key: &CacheKey, meta: &CacheMeta) -> MissHandler {
    Box::new(Fill {
        into,
        key: key.combined_bin(),
        head: Head::of(meta),
        chunks: Vec::new(),
        size: 0,
        too_big: false,
    })
}

// --- this process's memory -------------------------------------------------

pub struct Local {
    lru: Mutex<Lru>,
    max_entries: AtomicUsize,
    max_bytes: AtomicUsize,
}

#[derive(Default)]
struct Lru {
    map: HashMap<HashBinary, (Arc<Entry>, u64)>,
    /// Last use → key: the first is the least recently used.
    order: BTreeMap<u64, HashBinary>,
    tick: u64,
    bytes: usize,
}

impl Lru {
    fn remove(&mut self, key: &HashBinary) -> bool {
        match self.map.remove(key) {
            Some((e, tick)) => {
                self.order.remove(&tick);
                self.bytes -= e.size;
                true
            }
            None => false,
        }
    }

    fn touch(&mut self, key: &HashBinary) -> Option<Arc<Entry>> {
        self.tick += 1;
        let tick = self.tick;
        let (e, at) = self.map.get_mut(key)?;
        self.order.remove(at);
        *at = tick;
        self.order.insert(tick, *key);
        Some(e.clone())
    }
}

/// The local store of a policy instance (`scope`), made on first use.
pub fn local(scope: &str, max_entries: usize, max_bytes: usize) -> &'static Local {
    static ALL: LazyLock<Mutex<HashMap<String, &'static Local>>> = LazyLock::new(Default::default);
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    let store = *all.entry(scope.to_string()).or_insert_with(|| {
        Box::leak(Box::new(Local {
            lru: Mutex::default(),
            max_entries: AtomicUsize::new(max_entries),
            max_bytes: AtomicUsize::new(max_bytes),
        }))
    });
    store.max_entries.store(max_entries, Ordering::Relaxed);
    store.max_bytes.store(max_bytes, Ordering::Relaxed);
    store
}

impl Local {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, key: HashBinary, entry: Entry) {
        let (max_entries, max_bytes) = (
            self.max_entries.load(Ordering::Relaxed),
            self.max_bytes.load(Ordering::Relaxed),
        );
        if entry.size > max_bytes {
            return;
        }
        let mut lru = self.lock();
        lru.remove(&key);
        lru.tick += 1;
        let tick = lru.tick;
        lru.bytes += entry.size;
        lru.map.insert(key, (Arc::new(entry), tick));
        lru.order.insert(tick, key);
        while lru.map.len() > max_entries || lru.bytes > max_bytes {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some((e, _)) = lru.map.remove(&oldest) {
                lru.bytes -= e.size;
                super::COUNTS.evicted.inc();
            }
        }
    }

    fn clear(&self) {
        *self.lock() = Lru::default();
    }

    /// Entries and bytes held now.
    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let lru = self.lock();
        (lru.map.len(), lru.bytes)
    }
}

#[async_trait]
impl Storage for Local {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let found = self.lock().touch(&key.combined_bin());
        Ok(found.map(|e| (e.head.meta(), hit(e.body.clone()))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(fill(Store::Local(self), key, meta))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        Ok(match self.lock().remove(&target.key().combined_bin()) {
            true => PurgeOutcome::Purged(None),
            false => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let key = key.combined_bin();
        let mut lru = self.lock();
        let Some((old, _)) = lru.map.get(&key) else {
            return Ok(false);
        };
        let entry = Entry::new(Head::of(meta), old.body.clone());
        let grew = entry.size as isize - old.size as isize;
        if let Some((slot, _)) = lru.map.get_mut(&key) {
            *slot = Arc::new(entry);
        }
        lru.bytes = (lru.bytes as isize + grew).max(0) as usize;
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

// --- Redis -------------------------------------------------------------------

pub struct Shared {
    redis: Arc<Redis>,
    /// `flexgw:cache:<scope>`: the index (a sorted set of entry keys by
    /// expiry); entries are `<prefix>:<hash>`.
    prefix: String,
    max_entries: AtomicUsize,
}

/// The shared store of a policy instance (`scope`) in this Redis.
pub fn shared(scope: &str, redis: Arc<Redis>, max_entries: usize) -> &'static Shared {
    type Stores = HashMap<(String, RedisSettings), &'static Shared>;
    static ALL: LazyLock<Mutex<Stores>> = LazyLock::new(Default::default);
    let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    // by the whole settings: a reload that changes the database, the
    // credentials or the servers gets a store on the new ones
    let id = (scope.to_string(), redis.settings().clone());
    let store = *all.entry(id).or_insert_with(|| {
        // a cluster keeps a scope's entries and index on one node
        let prefix = format!("flexgw:cache:{}", redis.tag(scope));
        Box::leak(Box::new(Shared {
            redis,
            prefix,
            max_entries: AtomicUsize::new(max_entries),
        }))
    });
    store.max_entries.store(max_entries, Ordering::Relaxed);
    store
}

/// Store an entry (KEYS[1]) with its expiry, index it (KEYS[2]) and drop
/// the entries past the bound, soonest to expire first; expired ones
/// leave the index as they go.
static PUT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  local gone = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #gone, 2 do redis.call('DEL', gone[i]) end
end
return 1
",
    )
});

/// Drop every indexed entry and the index.
static CLEAR: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local all = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #all do redis.call('DEL', all[i]) end
redis.call('DEL', KEYS[1])
return #all
",
    )
});

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn storage_error(why: String) -> Box<Error> {
    Error::explain(ErrorType::Custom("shared cache"), why)
}

impl Shared {
    fn key(&self, hash: &HashBinary) -> String {
        let mut key = format!("{}:", self.prefix);
        for b in hash {
            let _ = std::fmt::Write::write_fmt(&mut key, format_args!("{b:02x}"));
        }
        key
    }

    async fn put(&self, hash: HashBinary, meta: &CacheMeta, body: &[u8]) -> Result<()> {
        let (internal, header) = meta.serialize()?;
        let mut value = Vec::with_capacity(8 + internal.len() + header.len() + body.len());
        for part in [&internal, &header] {
            value.extend_from_slice(&(part.len() as u32).to_be_bytes());
            value.extend_from_slice(part);
        }
        value.extend_from_slice(body);
        let now = SystemTime::now();
        let ttl = kept_for(meta, now).as_millis().max(1) as u64;
        let max = self.max_entries.load(Ordering::Relaxed) as u64;
        let args: Vec<Vec<u8>> = vec![
            value,
            ttl.to_string().into_bytes(),
            (ms(now) + ttl).to_string().into_bytes(),
            ms(now).to_string().into_bytes(),
            max.to_string().into_bytes(),
        ];
        let keys = [self.key(&hash), self.prefix.clone()];
        self.redis
            .eval_as::<_, i64>(&PUT, &keys, &args)
            .await
            .map(|_| ())
            .map_err(storage_error)
    }

    async fn clear(&self) -> Result<()> {
        self.redis
            .eval_as::<u8, i64>(&CLEAR, std::slice::from_ref(&self.prefix), &[])
            .await
            .map(|_| ())
            .map_err(storage_error)
    }
}

/// How long from `now` a shared entry stays in Redis: while it is fresh,
/// and, when the backend gave it a validator (`ETag`, `Last-Modified`), as
/// long again after, so an expired entry can be revalidated (a `304`
/// refreshes it without sending the body again) instead of fetched anew.
/// The memory store keeps expired entries until they are evicted.
fn kept_for(meta: &CacheMeta, now: SystemTime) -> Duration {
    let fresh = meta.fresh_until().duration_since(now).unwrap_or_default();
    let headers = &meta.response_header().headers;
    if headers.contains_key(http::header::ETAG) || headers.contains_key(http::header::LAST_MODIFIED)
    {
        let life = meta
            .fresh_until()
            .duration_since(meta.created())
            .unwrap_or_default();
        fresh + life
    } else {
        fresh
    }
}

/// An entry as [`Shared::put`] wrote it.
fn parse(value: &[u8]) -> Option<(CacheMeta, Bytes)> {
    let mut rest = value;
    let mut part = || {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let p = rest.get(4..4 + len)?;
        rest = &rest[4 + len..];
        Some(p)
    };
    let (internal, header) = (part()?, part()?);
    let meta = CacheMeta::deserialize(internal, header).ok()?;
    Some((meta, Bytes::copy_from_slice(rest)))
}

#[async_trait]
impl Storage for Shared {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let mut get = redis::cmd("GET");
        get.arg(self.key(&key.combined_bin()));
        let value: Option<Vec<u8>> = self.redis.query(&get).await.map_err(storage_error)?;
        Ok(value
            .as_deref()
            .and_then(parse)
            .map(|(meta, body)| (meta, hit(body))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(fill(Store::Shared(self), key, meta))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key = self.key(&target.key().combined_bin());
        let mut del = redis::cmd("DEL");
        del.arg(&key);
        let n: i64 = self.redis.query(&del).await.map_err(storage_error)?;
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(&self.prefix).arg(&key);
        let _: i64 = self.redis.query(&zrem).await.map_err(storage_error)?;
        Ok(if n > 0 {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        trace: &SpanHandle,
    ) -> Result<bool> {
        // rewrite the entry with its body under the new head
        let Some((_, mut handler)) = self.lookup(key, trace).await? else {
            return Ok(false);
        };
        let body = handler.read_body().await?.unwrap_or_default();
        self.put(key.combined_bin(), meta, &body).await?;
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: u16) -> CacheMeta {
        let now = SystemTime::now();
        let header = ResponseHeader::build(status, None).unwrap();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::new(path, "")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn put(store: &'static Local, k: &str, body: &'static [u8]) {
        let span = pingora_cache::trace::Span::inactive().handle();
        let mut m = store
            .get_miss_handler(&key(k), &meta(200), &span)
            .await
            .unwrap();
        m.write_body(Bytes::from_static(body), true).await.unwrap();
        m.finish().await.unwrap();
    }

    async fn get(store: &'static Local, k: &str) -> Option<Bytes> {
        let span = pingora_cache::trace::Span::inactive().handle();
        let (_, mut h) = store.lookup(&key(k), &span).await.unwrap()?;
        h.read_body().await.unwrap()
    }

    #[test]
    fn least_recently_used_goes_first_by_entries_and_by_bytes() {
        rt().block_on(async {
            let s = local("test:lru", 2, 1 << 20);
            put(s, "/a", b"a").await;
            put(s, "/b", b"b").await;
            assert_eq!(get(s, "/a").await.as_deref(), Some(&b"a"[..]));
            put(s, "/c", b"c").await; // evicts /b, the least recently used
            assert!(get(s, "/b").await.is_none());
            assert!(get(s, "/a").await.is_some() && get(s, "/c").await.is_some());
            // a byte bound: two ~1,200-byte entries do not fit in 2000
            let s = local("test:bytes", 100, 2000);
            put(s, "/x", &[b'x'; 400]).await;
            put(s, "/y", &[b'y'; 400]).await;
            assert!(get(s, "/x").await.is_none());
            assert!(get(s, "/y").await.is_some());
            assert!(s.usage().1 <= 2000);
        });
    }

    #[test]
    fn a_stored_head_does_not_keep_the_upstream_read_buffer() {
        // as Pingora parses a response: every name and value a slice of
        // one read buffer of 4 KB or more
        let mut read = BytesMut::with_capacity(8192);
        read.extend_from_slice(b"Content-Type: text/plain\r\nX-Custom-Name: some value\r\n");
        let read = read.freeze();
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.append_header(
            read.slice(0..12),
            HeaderValue::from_maybe_shared(read.slice(14..24)).unwrap(),
        )
        .unwrap();
        h.append_header(
            read.slice(26..39),
            HeaderValue::from_maybe_shared(read.slice(41..51)).unwrap(),
        )
        .unwrap();
        h.append_header("x-custom-name", "second").unwrap();
        h.set_reason_phrase(Some("Fine")).unwrap();
        let before = read.as_ptr_range();
        let stored = Head::of(&CacheMeta::new(
            SystemTime::now(),
            SystemTime::now(),
            0,
            0,
            h,
        ))
        .header;
        for (name, value) in stored.case_header_iter() {
            for p in [name.as_slice().as_ptr(), value.as_bytes().as_ptr()] {
                assert!(
                    !before.contains(&p),
                    "{name:?}: {value:?} still in the read buffer"
                );
            }
        }
        // the same head: names' case, order, repeated names, reason phrase
        let mut wire = Vec::new();
        stored.header_to_h1_wire(&mut wire);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "Content-Type: text/plain\r\nX-Custom-Name: some value\r\nx-custom-name: second\r\n"
        );
        assert_eq!(stored.get_reason_phrase(), Some("Fine"));
        assert_eq!(stored.status, 200);
    }

    #[test]
    fn an_entry_over_a_megabyte_is_not_stored() {
        rt().block_on(async {
            let s = local("test:big", 10, 64 << 20);
            let span = pingora_cache::trace::Span::inactive().handle();
            let mut m = s
                .get_miss_handler(&key("/big"), &meta(200), &span)
                .await
                .unwrap();
            for _ in 0..17 {
                m.write_body(Bytes::from(vec![0u8; 64 << 10]), false)
                    .await
                    .unwrap();
            }
            m.finish().await.unwrap();
            assert!(get(s, "/big").await.is_none());
            assert_eq!(s.usage(), (0, 0));
        });
    }

    #[test]
    fn shared_entries_round_trip() {
        let m = meta(404);
        let (internal, header) = m.serialize().unwrap();
        let mut v = Vec::new();
        for p in [&internal, &header] {
            v.extend_from_slice(&(p.len() as u32).to_be_bytes());
            v.extend_from_slice(p);
        }
        v.extend_from_slice(b"body");
        let (back, body) = parse(&v).unwrap();
        assert_eq!(back.response_header().status.as_u16(), 404);
        assert_eq!(&body[..], b"body");
        assert!(parse(&v[..5]).is_none());
    }
}
