//! Test guest for `node/tests/forwarding.rs`: `POST /echo` answers with the
//! request body; anything else describes the request as the component saw it.

use reef_sdk::{Request, Response};

fn handle(req: Request) -> Response {
    if req.path() == "/echo" {
        return Response::bytes(200, "application/octet-stream", req.body().to_vec());
    }
    let mut text = format!(
        "node={}\npath={}\nauthority={}\n",
        std::env::var("NODE").unwrap_or_default(),
        req.path_with_query(),
        req.authority().unwrap_or(""),
    );
    for (name, value) in req.headers() {
        text.push_str(&format!("header {name}: {value}\n"));
    }
    Response::text(200, text)
}

reef_sdk::http_handler!(handle);
