//! State filters share across instances and requests: key-value data with
//! compare-and-swap and message queues (per VM id, as in Envoy: the
//! instances of a plugin share them, as do bindings of one module), and
//! the metrics filters define (process-wide, exported on `/metrics`).

use super::state::Event;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tokio::sync::mpsc::UnboundedSender;

/// Entries of shared data one VM id may hold, items per queue, metrics.
const MAX_KEYS: usize = 100_000;
const MAX_QUEUED: usize = 10_000;
const MAX_METRICS: usize = 1_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Key → (value, version).
type Entries = HashMap<Vec<u8>, (Vec<u8>, u32)>;

/// The shared data of one VM id.
#[derive(Default)]
pub struct Shared {
    vm_id: String,
    data: Mutex<Entries>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SetError {
    CasMismatch,
    Full,
}

impl Shared {
    /// The data of one VM id (created on first use).
    pub fn for_vm(vm_id: &str) -> Arc<Shared> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Shared>>>> = OnceLock::new();
        let mut all = lock(ALL.get_or_init(Default::default));
        all.entry(vm_id.to_string())
            .or_insert_with(|| {
                Arc::new(Shared {
                    vm_id: vm_id.to_string(),
                    data: Default::default(),
                })
            })
            .clone()
    }

    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }

    pub fn get(&self, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        lock(&self.data).get(key).cloned()
    }

    /// Set `key`; `cas` ≠ 0 must be the entry's current version.
    pub fn set(&self, key: &[u8], value: Vec<u8>, cas: u32) -> Result<(), SetError> {
        let mut data = lock(&self.data);
        let len = data.len();
        match data.get_mut(key) {
            Some((v, version)) => {
                if cas != 0 && cas != *version {
                    return Err(SetError::CasMismatch);
                }
                *v = value;
                *version = version.wrapping_add(1).max(1);
            }
            None if cas != 0 => return Err(SetError::CasMismatch),
            None if len >= MAX_KEYS => return Err(SetError::Full),
            None => {
                data.insert(key.to_vec(), (value, 1));
            }
        }
        Ok(())
    }

    pub fn keys(&self) -> Vec<Vec<u8>> {
        lock(&self.data).keys().cloned().collect()
    }

    /// Remove `key` (when `cas` is 0 or its version).
    pub fn remove(&self, key: &[u8], cas: u32) -> Result<(), SetError> {
        let mut data = lock(&self.data);
        match data.get(key) {
            Some((_, version)) if cas != 0 && cas != *version => Err(SetError::CasMismatch),
            _ => {
                data.remove(key);
                Ok(())
            }
        }
    }
}

/// Shared queues: named per VM id, numbered process-wide.
#[derive(Default)]
struct Queues {
    by_name: HashMap<(String, Vec<u8>), u32>,
    queues: HashMap<u32, Queue>,
    next: u32,
}

struct Queue {
    items: VecDeque<Vec<u8>>,
    /// The registering instance's root context hears of new items.
    owner: UnboundedSender<Event>,
}

fn queues() -> &'static Mutex<Queues> {
    static Q: OnceLock<Mutex<Queues>> = OnceLock::new();
    Q.get_or_init(Default::default)
}

/// Register (or take over) queue `name` of `vm_id`; its id.
pub fn register_queue(vm_id: &str, name: &[u8], owner: UnboundedSender<Event>) -> u32 {
    let mut q = lock(queues());
    let key = (vm_id.to_string(), name.to_vec());
    if let Some(&id) = q.by_name.get(&key) {
        if let Some(queue) = q.queues.get_mut(&id) {
            queue.owner = owner;
        }
        return id;
    }
    q.next += 1;
    let id = q.next;
    q.by_name.insert(key, id);
    q.queues.insert(
        id,
        Queue {
            items: VecDeque::new(),
            owner,
        },
    );
    id
}

pub fn resolve_queue(vm_id: &str, name: &[u8]) -> Option<u32> {
    lock(queues())
        .by_name
        .get(&(vm_id.to_string(), name.to_vec()))
        .copied()
}

#[derive(Debug, PartialEq, Eq)]
pub enum QueueError {
    NotFound,
    Full,
}

pub fn enqueue(id: u32, item: Vec<u8>) -> Result<(), QueueError> {
    let mut q = lock(queues());
    let queue = q.queues.get_mut(&id).ok_or(QueueError::NotFound)?;
    if queue.items.len() >= MAX_QUEUED {
        return Err(QueueError::Full);
    }
    queue.items.push_back(item);
    let _ = queue.owner.send(Event::QueueReady(id));
    Ok(())
}

/// The next item: `Ok(None)` when the queue is empty.
pub fn dequeue(id: u32) -> Result<Option<Vec<u8>>, QueueError> {
    let mut q = lock(queues());
    let queue = q.queues.get_mut(&id).ok_or(QueueError::NotFound)?;
    Ok(queue.items.pop_front())
}

/// A metric a filter defined.
pub struct Metric {
    pub name: String,
    pub kind: MetricKind,
    pub value: AtomicI64,
    /// Histograms: how many values were recorded (`value` is their sum).
    pub count: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

fn metrics() -> &'static Mutex<Vec<Arc<Metric>>> {
    static M: OnceLock<Mutex<Vec<Arc<Metric>>>> = OnceLock::new();
    M.get_or_init(Default::default)
}

/// Define (or find: every instance defines the same names) a metric; its
/// id, or `None` when the table is full or the name is taken by another kind.
pub fn define_metric(kind: MetricKind, name: &str) -> Option<u32> {
    let mut all = lock(metrics());
    if let Some(i) = all.iter().position(|m| m.name == name) {
        return (all[i].kind == kind).then_some(i as u32);
    }
    if all.len() >= MAX_METRICS {
        return None;
    }
    all.push(Arc::new(Metric {
        name: name.to_string(),
        kind,
        value: AtomicI64::new(0),
        count: AtomicU64::new(0),
    }));
    Some(all.len() as u32 - 1)
}

pub fn metric(id: u32) -> Option<Arc<Metric>> {
    lock(metrics()).get(id as usize).cloned()
}

/// Every metric defined so far (for `/metrics`).
pub fn all_metrics() -> Vec<Arc<Metric>> {
    lock(metrics()).clone()
}

impl Metric {
    pub fn increment(&self, by: i64) {
        self.value.fetch_add(by, Ordering::Relaxed);
    }

    pub fn record(&self, v: u64) {
        match self.kind {
            MetricKind::Histogram => {
                self.value.fetch_add(v as i64, Ordering::Relaxed);
                self.count.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.value.store(v as i64, Ordering::Relaxed),
        }
    }

    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap() {
        let s = Shared::for_vm("test-cas");
        assert_eq!(s.set(b"k", b"1".to_vec(), 7), Err(SetError::CasMismatch));
        s.set(b"k", b"1".to_vec(), 0).unwrap();
        let (v, cas) = s.get(b"k").unwrap();
        assert_eq!(v, b"1");
        s.set(b"k", b"2".to_vec(), cas).unwrap();
        // the old version no longer matches
        assert_eq!(s.set(b"k", b"3".to_vec(), cas), Err(SetError::CasMismatch));
        assert_eq!(s.get(b"k").unwrap().0, b"2");
        // the same VM id is the same data
        assert_eq!(Shared::for_vm("test-cas").get(b"k").unwrap().0, b"2");
        assert!(Shared::for_vm("test-other").get(b"k").is_none());
    }

    #[test]
    fn queues_notify_their_owner() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let id = register_queue("test-q", b"jobs", tx);
        assert_eq!(resolve_queue("test-q", b"jobs"), Some(id));
        assert_eq!(resolve_queue("test-other", b"jobs"), None);
        enqueue(id, b"a".to_vec()).unwrap();
        assert!(matches!(rx.try_recv(), Ok(Event::QueueReady(i)) if i == id));
        assert_eq!(dequeue(id), Ok(Some(b"a".to_vec())));
        assert_eq!(dequeue(id), Ok(None));
        assert_eq!(enqueue(9_999_999, vec![]), Err(QueueError::NotFound));
    }

    #[test]
    fn metrics_are_shared_by_name() {
        let a = define_metric(MetricKind::Counter, "test_requests").unwrap();
        let b = define_metric(MetricKind::Counter, "test_requests").unwrap();
        assert_eq!(a, b);
        assert_eq!(define_metric(MetricKind::Gauge, "test_requests"), None);
        metric(a).unwrap().increment(2);
        assert_eq!(metric(b).unwrap().get(), 2);
    }
}
