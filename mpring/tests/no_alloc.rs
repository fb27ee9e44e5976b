//! The hot path (reserve / commit / read / release) never allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts allocations made by the current thread while counting is on.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn count_allocations(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn the_counter_sees_allocations() {
    assert!(count_allocations(|| drop(std::hint::black_box(vec![1u8; 10]))) >= 1);
}

#[test]
fn hot_path_allocates_nothing() {
    let (producer, mut consumer) = mpring::Ring::new(4096).unwrap();
    let payload = [0x5Au8; 1350];
    let mut read = 0usize;
    let allocations = count_allocations(|| {
        for i in 0..10_000usize {
            match i % 4 {
                0 => producer.push(&payload[..i % 1351]).unwrap(),
                1 => {
                    let mut r = producer.reserve(1350).unwrap();
                    r[..100].copy_from_slice(&payload[..100]);
                    r.commit_len(100);
                }
                2 => producer.reserve(64).unwrap().abort(),
                _ => producer
                    .push_parts(&[&payload[..16], &payload[..200]])
                    .unwrap(),
            }
            if i % 2 == 1 {
                read += consumer.read_batch(8, |e| assert!(e.len() <= 1350));
            } else if let Some(e) = consumer.read() {
                assert!(e.len() <= 1350);
                read += 1;
            }
        }
        while consumer.read_batch(64, |_| ()) > 0 {}
        consumer.release();
        assert!(consumer.is_empty());
    });
    assert_eq!(allocations, 0);
    assert!(read > 0);
}
