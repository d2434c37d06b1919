//! A pod's memory budget, shared by all of its live instances.
//!
//! `StoreLimits` caps one store; a pod runs one store per in-flight request,
//! so the budget (DESIGN §9: "a pod's live instances together stay within its
//! memory") is an atomic counter the stores draw from and give back to when
//! they drop. Hitting it is recorded on the store's limiter, which is how a
//! caller tells "out of memory" from any other trap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use wasmtime::ResourceLimiter;

/// A pod's memory budget: bytes of linear memory its instances may hold.
#[derive(Debug, Clone)]
pub(crate) struct MemoryBudget {
    limit: u64,
    used: Arc<AtomicU64>,
}

impl MemoryBudget {
    pub(crate) fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            limit,
            used: Arc::default(),
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held by the pod's live instances right now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The error a refused growth traps with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MemoryRefused {
    #[error(
        "the pod's memory budget of {limit} bytes is exhausted (growing by {requested} bytes)"
    )]
    Budget { limit: u64, requested: u64 },
    #[error("a memory may not grow past {maximum} bytes (asked for {desired})")]
    Maximum { maximum: usize, desired: usize },
}

/// One store's share of its pod's budget; gives it back on drop.
#[derive(Debug)]
pub(crate) struct PodLimiter {
    budget: MemoryBudget,
    held: u64,
    /// The last growth granted, returned if wasmtime then fails to grow.
    pending: u64,
    exceeded: bool,
}

impl PodLimiter {
    pub(crate) fn new(budget: MemoryBudget) -> PodLimiter {
        PodLimiter {
            budget,
            held: 0,
            pending: 0,
            exceeded: false,
        }
    }

    /// Whether this store was refused memory (budget or per-instance cap).
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl ResourceLimiter for PodLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Every refusal traps rather than failing the `memory.grow`: a guest
        // given -1 almost always aborts anyway, and a trap says why.
        if let Some(maximum) = maximum.filter(|&max| desired > max) {
            self.exceeded = true;
            return Err(MemoryRefused::Maximum { maximum, desired }.into());
        }
        let requested = desired.saturating_sub(current) as u64;
        if !self.budget.try_take(requested) {
            self.exceeded = true;
            let limit = self.budget.limit;
            return Err(MemoryRefused::Budget { limit, requested }.into());
        }
        self.held += requested;
        self.pending = requested;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Granted by us but refused by wasmtime (the per-instance cap or the
        // OS): give the bytes back and treat it like the budget.
        self.budget.give_back(self.pending);
        self.held -= self.pending;
        self.pending = 0;
        self.exceeded = true;
        Err(error)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The pool caps table elements per table; tables are small next to
        // memories and not counted against the budget.
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

impl Drop for PodLimiter {
    fn drop(&mut self) {
        self.budget.give_back(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_share_the_budget_and_give_it_back() {
        let budget = MemoryBudget::new(100);
        let mut a = PodLimiter::new(budget.clone());
        let mut b = PodLimiter::new(budget.clone());
        assert!(a.memory_growing(0, 60, None).unwrap());
        assert!(b.memory_growing(0, 60, None).is_err());
        assert!(b.exceeded());
        assert!(!a.exceeded());
        assert_eq!(budget.used(), 60);
        drop(a);
        assert_eq!(budget.used(), 0);
        assert!(b.memory_growing(0, 60, None).unwrap());
        assert!(b.memory_growing(60, 200, Some(100)).is_err());
        drop(b);
        assert_eq!(budget.used(), 0);
    }
}
