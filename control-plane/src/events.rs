//! Events recorded by the control plane (scheduler, controllers), folded by
//! [`reef_api::events::fold`] like the nodes' events.

use crate::registry::{Precondition, Registry, Result};
use reef_api::events::{event_name, event_object, fold};
use reef_api::{EventSpec, Kind, Object, ObjectRef};

pub use reef_api::events::Occurrence;

/// Records an event about `involved` in `namespace`.
pub async fn record(
    registry: &Registry,
    namespace: &str,
    involved: ObjectRef,
    reason: &str,
    message: &str,
    occurrence: Occurrence,
) -> Result<()> {
    let name = event_name(&involved, reason);
    let existing: Option<Object<EventSpec>> =
        match registry.try_get(Kind::Event, Some(namespace), &name)? {
            Some(raw) => Some(raw.typed()?),
            None => None,
        };
    let now = reef_api::now_rfc3339();
    let Some(spec) = fold(
        existing.as_ref().map(|e| &e.spec),
        involved,
        reason,
        message,
        occurrence,
        &now,
    ) else {
        return Ok(());
    };
    registry
        .put(&event_object(namespace, spec).to_raw()?, Precondition::None)
        .await?;
    Ok(())
}
