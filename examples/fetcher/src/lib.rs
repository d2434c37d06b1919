//! `fetcher`: an `http` component that makes outbound requests. `/allowed`
//! fetches `$ALLOWED_URL` (a host in the pod's `outbound` list), `/forbidden`
//! fetches `$FORBIDDEN_URL` (one that is not), and `/fetch?url=URL` fetches
//! any URL: the node lets out only what the list names and refuses the rest
//! inside the guest, before any connection is made.

use reef_sdk::{fetch, Request, Response};

fn handle(req: Request) -> Response {
    let url = match req.path() {
        "/allowed" => std::env::var("ALLOWED_URL").ok(),
        "/forbidden" => std::env::var("FORBIDDEN_URL").ok(),
        "/fetch" => req
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| pair.strip_prefix("url="))
            .map(str::to_string),
        _ => return Response::text(404, "try /allowed, /forbidden or /fetch?url=URL\n"),
    };
    let Some(url) = url else {
        return Response::text(
            400,
            "no URL to fetch: set ALLOWED_URL / FORBIDDEN_URL, or pass ?url=\n",
        );
    };
    match fetch("GET", &url, b"") {
        Ok(upstream) => Response::text(
            200,
            format!(
                "fetched {url}: {} {}\n",
                upstream.status(),
                String::from_utf8_lossy(upstream.body()).trim_end()
            ),
        ),
        Err(e) => Response::text(502, format!("fetching {url} was refused: {e}\n")),
    }
}

reef_sdk::http_handler!(handle);
