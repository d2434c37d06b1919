//! A small bounded map of recently computed values, shared across tasks:
//! what many watchers derive from the same change (its decoded object, its
//! encoded frame) is computed once and reused while it is recent.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;

pub struct Recent<K, V> {
    capacity: usize,
    inner: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    values: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Recent<K, V> {
    pub fn new(capacity: usize) -> Self {
        Recent {
            capacity,
            inner: Mutex::new(Entries {
                values: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// The value for `key`, computed by `make` (outside the lock) when it is
    /// not kept; the oldest entries go once more than `capacity` are kept.
    pub fn get_or_make<E>(&self, key: K, make: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        if let Some(value) = self.lock().values.get(&key) {
            return Ok(value.clone());
        }
        let value = make()?;
        let mut entries = self.lock();
        if entries.values.insert(key.clone(), value.clone()).is_none() {
            entries.order.push_back(key);
        }
        while entries.order.len() > self.capacity {
            if let Some(old) = entries.order.pop_front() {
                entries.values.remove(&old);
            }
        }
        Ok(value)
    }

    /// A panic elsewhere must not wedge the callers: the map stays valid.
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<K, V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_and_forgets_the_oldest() {
        let recent: Recent<u32, u32> = Recent::new(2);
        let mut made = 0;
        for key in [1, 1, 2, 1, 3, 1] {
            let _ = recent.get_or_make::<()>(key, || {
                made += 1;
                Ok(key * 10)
            });
        }
        // 1, 2, 3 made once each; 1 again after 3 pushed it out.
        assert_eq!(made, 4);
        assert_eq!(recent.get_or_make::<()>(3, || Ok(0)), Ok(30));
    }
}
