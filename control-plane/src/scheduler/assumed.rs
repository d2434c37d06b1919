//! Binds planned but not yet committed (kube-scheduler's "assumed" pods).
//!
//! A pass hands its binds to background tasks and returns, so the next pass
//! can plan pods created meanwhile instead of waiting for thousands of binds
//! to commit. That next pass must count the binds still in flight as placed:
//! otherwise it would plan their pods again and, worse, offer their capacity
//! to other pods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A pod, by namespace and name.
pub type PodKey = (String, String);

/// Pods whose bind is in flight, and the node each is being bound to.
#[derive(Clone, Default)]
pub struct Assumed {
    binds: Arc<Mutex<HashMap<PodKey, String>>>,
}

impl Assumed {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PodKey, String>> {
        self.binds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is in flight now. A pass takes this before it reads the pods: a
    /// bind that commits in between is then either still here or already in
    /// what the pass reads, never in neither.
    pub fn snapshot(&self) -> HashMap<PodKey, String> {
        self.lock().clone()
    }

    /// Records a bind about to be written; the guard forgets it when dropped,
    /// which the bind's task does once the write has committed or failed.
    pub fn assume(&self, pod: PodKey, node: String) -> Forget {
        self.lock().insert(pod.clone(), node);
        Forget {
            assumed: self.clone(),
            pod,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Forgets one assumed bind when dropped, so a bind task that ends in any
/// way (done, failed, cancelled, panicked) cannot leave its pod assumed.
pub struct Forget {
    assumed: Assumed,
    pod: PodKey,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.assumed.lock().remove(&self.pod);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> PodKey {
        ("default".to_string(), name.to_string())
    }

    #[test]
    fn a_bind_is_assumed_until_its_guard_drops() {
        let assumed = Assumed::default();
        let a = assume_in_task(&assumed, "a", "n1");
        let b = assume_in_task(&assumed, "b", "n2");
        let now = assumed.snapshot();
        assert_eq!(now.get(&key("a")).map(String::as_str), Some("n1"));
        assert_eq!(now.get(&key("b")).map(String::as_str), Some("n2"));
        drop(a);
        assert!(!assumed.snapshot().contains_key(&key("a")));
        assert_eq!(assumed.len(), 1);
        drop(b);
        assert_eq!(assumed.len(), 0);
    }

    #[test]
    fn a_panicking_bind_task_forgets_its_pod() {
        let assumed = Assumed::default();
        let guard = assume_in_task(&assumed, "a", "n1");
        let result = std::thread::spawn(move || {
            let _guard = guard;
            panic!("bind task failed");
        })
        .join();
        assert!(result.is_err());
        assert_eq!(assumed.len(), 0);
    }

    fn assume_in_task(assumed: &Assumed, pod: &str, node: &str) -> Forget {
        assumed.assume(key(pod), node.to_string())
    }
}
