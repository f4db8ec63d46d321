//! Heap allocations counted in the process (`flexgw_heap_allocations_total`,
//! and allocations per request in `benches/load.sh`'s results). The binary's
//! global allocator (mimalloc) is wrapped in [`Counting`]: each thread
//! counts in a slot of its own, a plain load and store on a cache line no
//! other thread writes (no atomic read-modify-write, ~1 ns per allocation);
//! threads past the first 63 share the last slot, counted atomically.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

const SLOTS: usize = 64;
const SHARED: usize = SLOTS - 1;

#[repr(align(64))]
struct Slot(AtomicU64);

static COUNTS: [Slot; SLOTS] = [const { Slot(AtomicU64::new(0)) }; SLOTS];
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // const and without a destructor: usable from the allocator at any
    // point of a thread's life
    static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline]
fn count() {
    let slot = MINE.with(|mine| {
        let slot = mine.get();
        if slot != usize::MAX {
            return slot;
        }
        let slot = NEXT.fetch_add(1, Relaxed).min(SHARED);
        mine.set(slot);
        slot
    });
    let counter = &COUNTS[slot].0;
    if slot == SHARED {
        counter.fetch_add(1, Relaxed);
    } else {
        // only this thread writes this slot
        counter.store(counter.load(Relaxed) + 1, Relaxed);
    }
}

/// Allocations (and reallocations) since the process started, all threads.
pub fn allocations() -> u64 {
    COUNTS.iter().map(|s| s.0.load(Relaxed)).sum()
}

/// A global allocator that counts the allocations of the one it wraps.
pub struct Counting<A>(pub A);

unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        count();
        unsafe { self.0.realloc(ptr, layout, size) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

/// `flexgw_heap_allocations_total`, read when the metrics are scraped.
#[derive(Debug)]
pub(crate) struct HeapMetrics;

impl prometheus_client::collector::Collector for HeapMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        let counter = ConstCounter::new(allocations());
        let metric = encoder.encode_descriptor(
            "heap_allocations",
            "Heap allocations and reallocations made by the process (0 when its allocator does not count: tests)",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_a_slot_per_thread_and_sums_them() {
        let before = allocations();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..1000 {
                        count();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // other tests' threads may count too (only through count(), which
        // nothing else calls in the library's tests)
        assert!(allocations() - before >= 4000);
    }
}
