//! The connection cap: a count of open connections and, among them, those
//! still waiting for their first byte, oldest first, so the cap evicts a
//! silent one rather than refusing a client that talks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

struct State {
    open: usize,
    /// Connections that have sent nothing yet: (id, how to drop it).
    silent: VecDeque<(u64, Arc<Notify>)>,
    next_id: u64,
}

/// Shared by all connections of one listener.
#[derive(Clone)]
pub struct ConnectionLimits {
    max: usize,
    state: Arc<Mutex<State>>,
}

/// One admitted connection; frees its place when dropped.
pub struct Ticket {
    id: u64,
    /// Notified when the connection is evicted to make room.
    pub evicted: Arc<Notify>,
    limits: ConnectionLimits,
}

impl ConnectionLimits {
    pub fn new(max: usize) -> ConnectionLimits {
        ConnectionLimits {
            max: max.max(1),
            state: Arc::new(Mutex::new(State {
                open: 0,
                silent: VecDeque::new(),
                next_id: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the state whole: poison changes nothing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection, evicting the oldest silent one if full;
    /// `None` if full of connections that all talk.
    pub fn admit(&self) -> Option<Ticket> {
        let mut state = self.lock();
        if state.open >= self.max {
            let (_, oldest) = state.silent.pop_front()?;
            // Its ticket still counts until its task ends; one over the cap
            // for a moment is the price of never locking talkers out.
            oldest.notify_one();
        }
        state.open += 1;
        state.next_id += 1;
        let id = state.next_id;
        let evicted = Arc::new(Notify::new());
        state.silent.push_back((id, evicted.clone()));
        Some(Ticket {
            id,
            evicted,
            limits: self.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open
    }
}

impl Ticket {
    /// The connection has sent its first byte: it can no longer be evicted.
    pub fn spoke(&self) {
        let mut state = self.limits.lock();
        state.silent.retain(|(id, _)| *id != self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.limits.lock();
        state.open -= 1;
        state.silent.retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_listener_evicts_the_oldest_silent_connection() {
        let limits = ConnectionLimits::new(2);
        let first = limits.admit().expect("room");
        let second = limits.admit().expect("room");
        second.spoke();
        // Full: the silent first one makes room.
        let third = limits.admit().expect("evicts the silent one");
        assert_eq!(limits.open(), 3);
        drop(first);
        assert_eq!(limits.open(), 2);
        third.spoke();
        // Full of talkers: refused.
        assert!(limits.admit().is_none());
        drop(second);
        assert!(limits.admit().is_some());
    }
}
