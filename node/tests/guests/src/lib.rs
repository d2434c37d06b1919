//! Test guest for `node/tests/runtime.rs`: each route misbehaves in one way
//! the host must contain.

use reef_sdk::{Request, Response};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, OutgoingRequest, Scheme};

fn handle(req: Request) -> Response {
    let arg = |name: &str| {
        req.query()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_string)
    };
    match req.path() {
        "/spin" => loop {
            std::hint::black_box(());
        },
        "/sleep" => {
            let ms: u64 = arg("ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Response::text(200, "slept\n")
        }
        "/alloc" => {
            let mib: usize = arg("mib").and_then(|v| v.parse().ok()).unwrap_or(1);
            let block = vec![1u8; mib << 20];
            Response::text(
                200,
                format!("allocated {} bytes\n", std::hint::black_box(block).len()),
            )
        }
        "/panic" => panic!("asked to panic"),
        "/echo" => Response::bytes(200, "application/octet-stream", req.body().to_vec()),
        "/env" => Response::text(
            200,
            std::env::vars()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>(),
        ),
        "/fetch" => fetch(&arg("authority").unwrap_or_default()),
        _ => Response::text(404, "no such route\n"),
    }
}

/// GET http://{authority}/ through wasi:http; reports the status or the
/// error code the host gave.
fn fetch(authority: &str) -> Response {
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).unwrap();
    request.set_authority(Some(authority)).unwrap();
    request.set_path_with_query(Some("/")).unwrap();
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return Response::text(502, format!("error: {code:?}\n")),
    };
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => {
            Response::text(200, format!("upstream status {}\n", response.status()))
        }
        Some(Ok(Err(code))) => Response::text(502, format!("error: {code:?}\n")),
        other => Response::text(500, format!("unexpected: {other:?}\n")),
    }
}

reef_sdk::http_handler!(handle);
