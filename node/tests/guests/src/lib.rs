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
        "/write" => {
            let path = arg("path").unwrap_or_else(|| "/tmp/data".into());
            let total: usize = arg("bytes").and_then(|v| v.parse().ok()).unwrap_or(0);
            let chunk: usize = arg("chunk").and_then(|v| v.parse().ok()).unwrap_or(65536);
            let at: Option<u64> = arg("at").and_then(|v| v.parse().ok());
            Response::text(200, write_file(&path, total, chunk.max(1), at))
        }
        "/files" => {
            let count: usize = arg("count").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut made = 0;
            for i in 0..count {
                if let Err(e) = std::fs::write(format!("/tmp/f{i}"), b"x") {
                    return Response::text(200, format!("created {made} files, then: {e}\n"));
                }
                made += 1;
            }
            Response::text(200, format!("created {made} files\n"))
        }
        "/remove" => {
            let path = arg("path").unwrap_or_default();
            match std::fs::remove_file(&path) {
                Ok(()) => Response::text(200, "removed\n"),
                Err(e) => Response::text(200, format!("error: {e}\n")),
            }
        }
        "/read" => match std::fs::read(arg("path").unwrap_or_default()) {
            Ok(bytes) => Response::text(200, format!("read {} bytes\n", bytes.len())),
            Err(e) => Response::text(200, format!("error: {e}\n")),
        },
        _ => Response::text(404, "no such route\n"),
    }
}

/// Writes `total` bytes to `path` in chunks (at offset `at` if given, else
/// from the start) and says how far it got.
fn write_file(path: &str, total: usize, chunk: usize, at: Option<u64>) -> String {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = match std::fs::OpenOptions::new().create(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) => return format!("wrote 0 bytes, then: {e}\n"),
    };
    if let Some(at) = at {
        if let Err(e) = file.seek(SeekFrom::Start(at)) {
            return format!("wrote 0 bytes, then: {e}\n");
        }
    }
    let block = vec![7u8; chunk];
    let mut written = 0;
    while written < total {
        let n = chunk.min(total - written);
        if let Err(e) = file.write_all(&block[..n]) {
            return format!("wrote {written} bytes, then: {e}\n");
        }
        written += n;
    }
    format!("wrote {written} bytes\n")
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
