//! Running http pods of the test guest in one runtime per test process.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, StatusCode};
use reef_node::runtime::{digest_of, HandleError, HttpComponent, HttpPod, Runtime, RuntimeConfig};
use std::sync::OnceLock;

use super::build_guest;

/// The test guest, rebuilt (a no-op when fresh) once per process.
pub fn test_guest_wasm() -> Vec<u8> {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| build_guest("guests", "reef_test_guest"))
        .clone()
}

/// One runtime for every test, so each component compiles once.
pub fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Runtime::new(RuntimeConfig {
                max_instances: 64,
                ..RuntimeConfig::default()
            })
            .expect("runtime")
        })
        .clone()
}

pub async fn prepare(wasm: &[u8]) -> HttpComponent {
    runtime()
        .prepare_http(&digest_of(wasm), wasm)
        .await
        .expect("prepare_http")
}

pub fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "test.local")
        .body(Empty::new())
        .unwrap()
}

/// Status and body text, or the error.
pub async fn call<B>(pod: &HttpPod, req: Request<B>) -> Result<(StatusCode, String), HandleError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let response = pod.handle(req).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
