//! Recycles request allocations. Requests are usually made on one thread
//! and freed on another (a pool worker), which defeats the allocator's
//! per-thread caches; here each thread keeps a stash per size class and
//! threads trade full stashes in batches through a bounded channel, so a
//! request costs a push and a pop, and one channel operation per batch.

use super::layout;
use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;
use crate::sync::OnceLock;

/// Extension capacities of the cached classes; larger ones are not cached.
const CLASSES: [usize; 5] = [0, 16, 64, 256, 1024];
const BATCH: usize = 32;
const LOCAL_MAX: usize = 2 * BATCH;
const GLOBAL_BATCHES: usize = 64;

/// A free block, not owned by any request.
pub(super) struct Block(NonNull<u8>);
// SAFETY: a free block is plain memory that no one points into; moving
// it between threads moves its ownership.
unsafe impl Send for Block {}

type Batches = (crossbeam_channel::Sender<Vec<Block>>, crossbeam_channel::Receiver<Vec<Block>>);

fn global() -> &'static [Batches; CLASSES.len()] {
    static G: OnceLock<[Batches; CLASSES.len()]> = OnceLock::new();
    G.get_or_init(|| std::array::from_fn(|_| crossbeam_channel::bounded(GLOBAL_BATCHES)))
}

struct Local([Vec<Block>; CLASSES.len()]);

impl Drop for Local {
    fn drop(&mut self) {
        for (class, stash) in self.0.iter_mut().enumerate() {
            for b in stash.drain(..) {
                free_block(class, b);
            }
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local(std::array::from_fn(|_| Vec::new())));
}

/// The class and capacity for an extension of `ext_len` bytes.
pub(super) fn class_of(ext_len: usize) -> Option<(usize, usize)> {
    CLASSES.iter().position(|&c| ext_len <= c).map(|i| (i, CLASSES[i]))
}

fn block_layout(class: usize) -> Layout {
    layout(CLASSES[class]).expect("class layouts are valid").0
}

fn free_block(class: usize, b: Block) {
    // SAFETY: every block of this class was allocated with this layout.
    unsafe { alloc::dealloc(b.0.as_ptr(), block_layout(class)) }
}

/// A block of `class`, recycled or new, and whether it was recycled (then
/// it holds the header of the request that used it last, dropped in place).
pub(super) fn take(class: usize) -> Option<(NonNull<u8>, bool)> {
    let cached = LOCAL.try_with(|l| {
        let mut l = l.try_borrow_mut().ok()?;
        let stash = &mut l.0[class];
        if stash.is_empty() {
            *stash = global()[class].1.try_recv().ok()?;
        }
        stash.pop()
    });
    if let Ok(Some(b)) = cached {
        return Some((b.0, true));
    }
    // SAFETY: the layout has a non-zero size (the header is not a ZST).
    NonNull::new(unsafe { alloc::alloc(block_layout(class)) }).map(|p| (p, false))
}

/// Gives a block of `class` back for reuse.
pub(super) fn give(class: usize, p: NonNull<u8>) {
    let b = Block(p);
    let rest = LOCAL.try_with(|l| {
        let Ok(mut l) = l.try_borrow_mut() else { return Some(b) };
        let stash = &mut l.0[class];
        stash.push(b);
        if stash.len() >= LOCAL_MAX {
            let batch = stash.split_off(LOCAL_MAX - BATCH);
            if let Err(e) = global()[class].0.try_send(batch) {
                for b in e.into_inner() {
                    free_block(class, b);
                }
            }
        }
        None
    });
    match rest {
        Ok(None) => {}
        Ok(Some(b)) => free_block(class, b),
        // The thread is exiting and its stash is gone: free the block.
        Err(_) => free_block(class, Block(p)),
    }
}
