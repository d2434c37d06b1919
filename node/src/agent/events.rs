//! Events the agent reports about its pods (started, killed, failed), folded like
//! the control plane's. Best effort: a lost event never holds up a pod.

use reef_api::events::{event_name, event_object, fold, Occurrence};
use reef_api::{Client, EventSpec, Kind, Object, ObjectRef};

/// Event writes in flight at once: a node starting thousands of pods writes
/// their events steadily, not all in the same instant.
static WRITING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

/// Records an event in the background.
pub fn record(client: &Client, namespace: &str, pod: &str, reason: &'static str, message: String) {
    let (client, namespace, pod) = (client.clone(), namespace.to_string(), pod.to_string());
    tokio::spawn(async move {
        // Never closed, so acquiring cannot fail.
        let _permit = WRITING.acquire().await;
        if let Err(e) = write(&client, &namespace, &pod, reason, &message).await {
            tracing::debug!(%pod, reason, "event not recorded: {e}");
        }
    });
}

async fn write(
    client: &Client,
    namespace: &str,
    pod: &str,
    reason: &str,
    message: &str,
) -> Result<(), reef_api::ClientError> {
    let involved = ObjectRef {
        kind: Kind::Pod,
        name: pod.to_string(),
    };
    let name = event_name(&involved, reason);
    let existing: Option<Object<EventSpec>> =
        match client.get(Kind::Event, Some(namespace), &name).await {
            Ok(raw) => raw.typed().ok(),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
    let now = reef_api::now_rfc3339();
    let Some(spec) = fold(
        existing.as_ref().map(|e| &e.spec),
        involved,
        reason,
        message,
        Occurrence::Distinct,
        &now,
    ) else {
        return Ok(());
    };
    let raw = event_object(namespace, spec)
        .to_raw()
        .map_err(|e| reef_api::ClientError::Decode(e.to_string()))?;
    client.put(&raw, false).await.map(drop)
}
