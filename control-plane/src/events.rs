//! Events: what happened to an object and why. Repeats of the same reason and
//! message fold into one object with a count, as in Kubernetes.

use crate::registry::{new_uid, Precondition, Registry, Result};
use reef_api::{EventSpec, Kind, Metadata, Object, ObjectRef};
use std::time::Duration;

/// A repeat of an unchanged event within this window is not rewritten, so a
/// controller retrying every second does not turn into a write per second.
const REFRESH: Duration = Duration::from_secs(30);

/// Records an event about `involved` in `namespace`.
pub async fn record(
    registry: &Registry,
    namespace: &str,
    involved: ObjectRef,
    reason: &str,
    message: &str,
) -> Result<()> {
    let name = format!("{}.{}", involved.name, reason.to_ascii_lowercase());
    let now = reef_api::now_rfc3339();
    let existing = registry.try_get(Kind::Event, Some(namespace), &name)?;
    let spec = match existing {
        Some(raw) => {
            let mut event: Object<EventSpec> = raw.typed()?;
            let recent = event
                .spec
                .last_seen
                .as_deref()
                .and_then(reef_api::age)
                .is_some_and(|age| age < REFRESH);
            if event.spec.message == message && recent {
                return Ok(());
            }
            if event.spec.message == message {
                event.spec.count += 1;
            } else {
                event.spec.message = message.to_string();
                event.spec.count = 1;
            }
            event.spec.last_seen = Some(now);
            event.spec
        }
        None => EventSpec {
            involved,
            reason: reason.to_string(),
            message: message.to_string(),
            count: 1,
            first_seen: Some(now.clone()),
            last_seen: Some(now),
        },
    };
    let obj = Object {
        kind: Kind::Event,
        metadata: Metadata {
            name,
            namespace: Some(namespace.to_string()),
            uid: new_uid(),
            ..Metadata::default()
        },
        spec,
        status: serde_json::Value::Null,
    };
    registry.put(&obj.to_raw()?, Precondition::None).await?;
    Ok(())
}
