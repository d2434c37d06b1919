//! Event folding, shared by the control plane and node agents: repeats of one
//! reason about one object become one Event with a count, as in Kubernetes.

use crate::resource::*;
use std::time::Duration;

/// An unchanged condition seen again within this window is not rewritten, so a
/// loop re-observing it every second does not write every second.
const REFRESH: Duration = Duration::from_secs(30);

/// Whether an event reports a new happening or re-observes an ongoing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occurrence {
    /// Something happened again (a restart, a kill): always counted.
    Distinct,
    /// A condition still holds (a pod still unschedulable): counted at most
    /// every 30 s, rewritten at once if its message changes.
    Ongoing,
}

/// One event object per (object, reason): `hello-abc.failedscheduling`.
pub fn event_name(involved: &ObjectRef, reason: &str) -> String {
    format!("{}.{}", involved.name, reason.to_ascii_lowercase())
}

/// What to store given the stored event (if any); `None` when nothing changes.
pub fn fold(
    existing: Option<&EventSpec>,
    involved: ObjectRef,
    reason: &str,
    message: &str,
    occurrence: Occurrence,
    now: &str,
) -> Option<EventSpec> {
    let Some(existing) = existing else {
        return Some(EventSpec {
            involved,
            reason: reason.to_string(),
            message: message.to_string(),
            count: 1,
            first_seen: Some(now.to_string()),
            last_seen: Some(now.to_string()),
        });
    };
    let mut next = existing.clone();
    let same = existing.message == message;
    if same && occurrence == Occurrence::Ongoing {
        let recent = existing
            .last_seen
            .as_deref()
            .and_then(crate::age)
            .is_some_and(|age| age < REFRESH);
        if recent {
            return None;
        }
    }
    next.count = if same || occurrence == Occurrence::Distinct {
        existing.count + 1
    } else {
        1
    };
    next.message = message.to_string();
    next.last_seen = Some(now.to_string());
    Some(next)
}

/// The Event object holding `spec`.
pub fn event_object(namespace: &str, spec: EventSpec) -> Event {
    Object {
        kind: Kind::Event,
        metadata: Metadata {
            name: event_name(&spec.involved, &spec.reason),
            namespace: Some(namespace.to_string()),
            ..Metadata::default()
        },
        spec,
        status: serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> ObjectRef {
        ObjectRef {
            kind: Kind::Pod,
            name: "p".into(),
        }
    }

    #[test]
    fn repeats_fold_into_counts() {
        let now = crate::now_rfc3339();
        let first = fold(None, pod(), "BackOff", "m", Occurrence::Distinct, &now).expect("new");
        assert_eq!(first.count, 1);
        let second = fold(
            Some(&first),
            pod(),
            "BackOff",
            "m",
            Occurrence::Distinct,
            &now,
        )
        .expect("counted");
        assert_eq!(second.count, 2);
        // An ongoing condition seen again at once is not rewritten...
        assert!(fold(
            Some(&second),
            pod(),
            "BackOff",
            "m",
            Occurrence::Ongoing,
            &now
        )
        .is_none());
        // ...unless what it says changed.
        let changed = fold(
            Some(&second),
            pod(),
            "BackOff",
            "other",
            Occurrence::Ongoing,
            &now,
        )
        .expect("changed");
        assert_eq!((changed.count, changed.message.as_str()), (1, "other"));
        assert_eq!(event_name(&pod(), "BackOff"), "p.backoff");
    }
}
