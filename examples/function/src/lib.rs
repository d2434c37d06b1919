//! `function`: a serverless-style component for reef's autoscaler.
//!
//! - `/echo` streams the request body back as it arrives, chunk by chunk,
//!   whatever its size (nothing is held whole in the guest);
//! - `/sleep?ms=N` answers after N milliseconds, naming its pod and node;
//! - `/headers` answers with the request's headers, one `name: value` a line;
//! - `/call?url=URL` fetches URL (another Service in the cluster, say
//!   `http://NAME.NAMESPACE.svc/`) and answers with what came back;
//! - anything else answers with the pod and node that served it.

use reef_sdk::wasip2::exports::http::incoming_handler::Guest;
use reef_sdk::wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use reef_sdk::{fetch, Request, Response};

fn whoami() -> String {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| "?".into());
    format!("pod={} node={}", var("REEF_POD"), var("REEF_NODE"))
}

fn param(req: &Request, name: &str) -> Option<String> {
    req.query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_string)
}

fn buffered(req: Request) -> Response {
    match req.path() {
        "/sleep" => {
            let ms: u64 = param(&req, "ms").and_then(|v| v.parse().ok()).unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms.min(60_000)));
            Response::text(200, format!("slept {ms} ms {}\n", whoami()))
        }
        "/headers" => {
            let lines: Vec<String> = req
                .headers()
                .iter()
                .map(|(name, value)| format!("{name}: {value}"))
                .collect();
            Response::text(200, lines.join("\n") + "\n")
        }
        "/call" => {
            let Some(url) = param(&req, "url") else {
                return Response::text(400, "pass ?url=URL\n");
            };
            match fetch("GET", &url, b"") {
                Ok(answer) => Response::text(
                    answer.status(),
                    format!(
                        "{url} answered {}: {}",
                        answer.status(),
                        String::from_utf8_lossy(answer.body())
                    ),
                ),
                Err(e) => Response::text(502, format!("calling {url} failed: {e}\n")),
            }
        }
        _ => Response::text(200, format!("function {}\n", whoami())),
    }
}

/// Copies the request body to the response body as it arrives.
fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
    let (Ok(outgoing), Ok(incoming)) = (response.body(), request.consume()) else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    let copied = match (incoming.stream(), outgoing.write()) {
        (Ok(mut input), Ok(mut output)) => {
            let copied = std::io::copy(&mut input, &mut output).is_ok();
            let flushed = output.blocking_flush().is_ok();
            copied && flushed
        }
        _ => false,
    };
    drop(IncomingBody::finish(incoming));
    if copied {
        let _ = OutgoingBody::finish(outgoing, None);
    }
}

struct Function;

impl Guest for Function {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if request.path_with_query().is_some_and(|p| p == "/echo" || p.starts_with("/echo?")) {
            echo(request, out)
        } else {
            reef_sdk::serve(request, out, buffered)
        }
    }
}

reef_sdk::wasip2::http::proxy::export!(Function with_types_in reef_sdk::wasip2);
