//! The bounds every input from outside the process is held to, shared by the API
//! server (authoritative) and the CLI (a courtesy). Each is documented in
//! docs/security.md with its default; the ones an operator may change are flags.

use crate::quantity::{Cpu, Memory, Timeout};
use std::time::Duration;

/// Replicas of one deployment (and `autoscale.max`).
pub const MAX_REPLICAS: u32 = 10_000;
/// CPU one pod may request: 256 cores.
pub const MAX_POD_CPU: Cpu = Cpu(256_000);
/// Memory one pod may use: a wasm32 instance cannot address more.
pub const MAX_POD_MEMORY: Memory = Memory(4 << 30);
/// A pod's per-request deadline.
pub const MAX_TIMEOUT: Timeout = Timeout(Duration::from_secs(3600));
/// Longer settings (rollout progress deadline, autoscale idle).
pub const MAX_LONG_DURATION: Timeout = Timeout(Duration::from_secs(7 * 24 * 3600));
/// Labels (and node selector entries) on one object.
pub const MAX_LABELS: usize = 64;
/// Characters of a label value, and of a label key's name part (as Kubernetes).
pub const MAX_LABEL_PART: usize = 63;
/// Environment variables of one pod, and bytes of one value.
pub const MAX_ENV: usize = 256;
pub const MAX_ENV_VALUE: usize = 32 << 10;
/// Arguments of one command pod, and bytes of one argument.
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG: usize = 32 << 10;
/// Bytes of env values and args of one pod together.
pub const MAX_POD_STRINGS: usize = 256 << 10;
/// Entries of one pod's outbound list.
pub const MAX_OUTBOUND: usize = 64;
/// Objects in one `POST /api/v1/apply` (one Raft entry).
pub const MAX_APPLY_OBJECTS: usize = 500;
/// The autoscaler's stable window (Knative's bound): its memory per
/// deployment is one bucket per second of it.
pub const MAX_SCALE_WINDOW: Timeout = Timeout(Duration::from_secs(3600));
/// Target in-flight requests per pod for autoscaling.
pub const MAX_CONCURRENCY: u32 = 100_000;
/// A node's capacity: 1,048,576 cores, 1 PiB, a million pods.
pub const MAX_NODE_CPU: Cpu = Cpu(1 << 30);
pub const MAX_NODE_MEMORY: Memory = Memory(1 << 50);
pub const MAX_NODE_PODS: u32 = 1_000_000;
/// A tenant's quota values.
pub const MAX_QUOTA_CPU: Cpu = Cpu(1 << 40);
pub const MAX_QUOTA_MEMORY: Memory = Memory(1 << 60);
/// Characters of an event's reason and message.
pub const MAX_EVENT_TEXT: usize = 4096;
/// Characters of a pod's `last_error` and `reason`.
pub const MAX_STATUS_TEXT: usize = 4096;
/// Endpoints in one service's status.
pub const MAX_ENDPOINTS: usize = 100_000;

/// `text` cut to at most `max` characters, marked with `…` where it was cut:
/// for messages built from what other servers said, which can be any size.
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text[end..].chars().nth(1).is_some() => format!("{}…", &text[..end]),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod clip_tests {
    use super::clip;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "ab…");
        assert_eq!(clip("ééééé", 4), "ééé…");
        assert_eq!(clip("ééé", 4), "ééé");
        assert_eq!(clip("", 4), "");
        assert_eq!(clip(&"x".repeat(10_000), 512).chars().count(), 512);
    }
}
