//! `reef-sdk`: write reef HTTP components in plain Rust.
//!
//! Owns the guest side of reef's `http` world (`wit/reef.wit`, which is
//! `wasi:http/proxy`): a buffered [`Request`] and [`Response`], and the
//! [`http_handler!`] macro that exports a `fn(Request) -> Response` as the
//! component's `wasi:http/incoming-handler`. It knows nothing of the host
//! beyond the WASI interfaces; anything else (env vars, clocks, randomness)
//! is ordinary Rust `std` on `wasm32-wasip2`.
//!
//! ```ignore
//! use reef_sdk::{Request, Response};
//!
//! fn handle(req: Request) -> Response {
//!     Response::text(200, format!("you asked for {}\n", req.path()))
//! }
//!
//! reef_sdk::http_handler!(handle);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` as a `cdylib`;
//! the `.wasm` it produces is already a component. Bodies are read and
//! written whole: this SDK favours a small API over streaming.
//!
//! [`fetch`] makes an outbound request through `wasi:http/outgoing-handler`;
//! the node lets it out only to the hosts in the pod's `outbound` list.

use std::io::{Read as _, Write as _};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};

#[doc(hidden)]
pub use wasip2;

/// An incoming HTTP request, body read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    path_with_query: String,
    authority: Option<String>,
    scheme: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// A request built by hand, for unit-testing a handler off-wasm.
    pub fn new(method: impl Into<String>, path_with_query: impl Into<String>) -> Request {
        Request {
            method: method.into(),
            path_with_query: path_with_query.into(),
            authority: None,
            scheme: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// The method in upper case, e.g. `"GET"`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path and query exactly as the client sent them, e.g. `/a/b?x=1`.
    pub fn path_with_query(&self) -> &str {
        &self.path_with_query
    }

    /// The path without the query, e.g. `/a/b`.
    pub fn path(&self) -> &str {
        self.path_with_query
            .split_once('?')
            .map_or(self.path_with_query.as_str(), |(path, _)| path)
    }

    /// The raw query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.path_with_query.split_once('?').map(|(_, query)| query)
    }

    /// The authority (`Host`) the client addressed, if known.
    pub fn authority(&self) -> Option<&str> {
        self.authority.as_deref()
    }

    /// `"http"` or `"https"`, as the host saw the request.
    pub fn scheme(&self) -> Option<&str> {
        self.scheme.as_deref()
    }

    /// The first value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All headers in arrival order; names are lower case. Values that are
    /// not UTF-8 are converted lossily.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP response, body held in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::bytes(
            status,
            "text/plain; charset=utf-8",
            body.into().into_bytes(),
        )
    }

    /// A response with a body of the given content type.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response::new(status)
            .with_header("content-type", content_type)
            .with_body(body)
    }

    /// Adds a header (builder style). Hop-by-hop headers such as
    /// `connection` are refused by the host and turn the answer into a 500.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers in the order they were added.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// Why an outbound request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The URL is not `http://authority/path` or `https://authority/path`.
    BadUrl(String),
    /// The host refused or failed the request; `HttpRequestDenied` means the
    /// pod's `outbound` list does not name this authority.
    Host(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::BadUrl(url) => write!(f, "not an http(s) URL: {url:?}"),
            FetchError::Host(code) => write!(f, "the request failed: {code}"),
        }
    }
}

impl std::error::Error for FetchError {}

/// Sends `method url` with `body` and reads the whole response.
pub fn fetch(method: &str, url: &str, body: &[u8]) -> Result<Response, FetchError> {
    let bad_url = || FetchError::BadUrl(url.to_string());
    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(bad_url()),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad_url());
    }
    let host_error = |code: ErrorCode| FetchError::Host(format!("{code:?}"));
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_method(&method_of(method))
        .and_then(|()| request.set_scheme(Some(&scheme)))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some(path)))
        .map_err(|()| bad_url())?;
    let outgoing = request
        .body()
        .map_err(|()| FetchError::Host("request body unavailable".into()))?;
    // Sent first, so the host is reading the body while it is written.
    let pending = outgoing_handler::handle(request, None).map_err(host_error)?;
    if !body.is_empty() {
        let mut stream = outgoing
            .write()
            .map_err(|()| FetchError::Host("request body stream unavailable".into()))?;
        stream
            .write_all(body)
            .map_err(|e| FetchError::Host(format!("writing the request body: {e}")))?;
        stream
            .blocking_flush()
            .map_err(|e| FetchError::Host(format!("writing the request body: {e:?}")))?;
    }
    OutgoingBody::finish(outgoing, None).map_err(host_error)?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(host_error(code)),
        other => return Err(FetchError::Host(format!("no response: {other:?}"))),
    };
    let headers = header_list(&response.headers());
    let body = response
        .consume()
        .map_err(|()| "response body unavailable".to_string())
        .and_then(read_all)
        .map_err(FetchError::Host)?;
    Ok(Response {
        status: response.status(),
        headers,
        body,
    })
}

fn method_of(method: &str) -> Method {
    match method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

/// Exports `handler`, a `fn(reef_sdk::Request) -> reef_sdk::Response`, as
/// this component's `wasi:http/incoming-handler`. Use it once per crate.
#[macro_export]
macro_rules! http_handler {
    ($handler:path) => {
        struct __ReefHttpHandler;

        impl $crate::wasip2::exports::http::incoming_handler::Guest for __ReefHttpHandler {
            fn handle(
                request: $crate::wasip2::http::types::IncomingRequest,
                response_out: $crate::wasip2::http::types::ResponseOutparam,
            ) {
                $crate::__serve(request, response_out, $handler)
            }
        }

        $crate::wasip2::http::proxy::export!(__ReefHttpHandler with_types_in $crate::wasip2);
    };
}

/// Serves one request with a buffered `handler`, for components that export
/// `wasi:http/incoming-handler` themselves to stream some paths and buffer the rest.
pub fn serve(request: IncomingRequest, out: ResponseOutparam, handler: fn(Request) -> Response) {
    __serve(request, out, handler)
}

/// The body of [`http_handler!`]: converts, calls the handler, answers.
#[doc(hidden)]
pub fn __serve(request: IncomingRequest, out: ResponseOutparam, handler: fn(Request) -> Response) {
    let response = match read_request(request) {
        Ok(request) => handler(request),
        Err(message) => Response::text(400, format!("reef-sdk: {message}\n")),
    };
    send_response(out, response);
}

fn read_request(request: IncomingRequest) -> Result<Request, String> {
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(other) => other,
    };
    let scheme = request.scheme().map(|scheme| match scheme {
        Scheme::Http => "http".to_string(),
        Scheme::Https => "https".to_string(),
        Scheme::Other(other) => other,
    });
    let headers = header_list(&request.headers());
    let body = request
        .consume()
        .map_err(|()| "request body already consumed".to_string())
        .and_then(read_all)?;
    Ok(Request {
        method,
        path_with_query: request.path_with_query().unwrap_or_else(|| "/".to_string()),
        authority: request.authority(),
        scheme,
        headers,
        body,
    })
}

/// Header names (lower case) and values (lossy UTF-8), in order.
fn header_list(fields: &Fields) -> Vec<(String, String)> {
    fields
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect()
}

/// A whole incoming body, request's or response's.
fn read_all(body: IncomingBody) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    {
        let mut stream = body
            .stream()
            .map_err(|()| "body stream unavailable".to_string())?;
        stream
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading the body failed: {e}"))?;
    }
    drop(IncomingBody::finish(body));
    Ok(bytes)
}

fn send_response(out: ResponseOutparam, response: Response) {
    let (head, body) = match response_head(&response) {
        Ok(head) => (head, response.body),
        Err(message) => {
            let fallback = Response::text(500, format!("reef-sdk: {message}\n"));
            let head = response_head(&fallback).expect("the fallback response is valid");
            (head, fallback.body)
        }
    };
    let outgoing = head.body().expect("a fresh response has a body");
    ResponseOutparam::set(out, Ok(head));
    {
        let mut stream = outgoing.write().expect("a fresh body has a stream");
        // A write error means the client went away: nothing left to tell it.
        if stream.write_all(&body).is_err() || stream.blocking_flush().is_err() {
            return;
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Builds the wasi:http status and headers, or explains what the host refused.
fn response_head(response: &Response) -> Result<OutgoingResponse, String> {
    let fields = Fields::new();
    for (name, value) in &response.headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| format!("response header {name:?} refused: {e:?}"))?;
    }
    let head = OutgoingResponse::new(fields);
    head.set_status_code(response.status)
        .map_err(|()| format!("invalid status code {}", response.status))?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_split() {
        let req = Request::new("GET", "/a/b?x=1&y=2").with_header("X-Test", "yes");
        assert_eq!(req.path(), "/a/b");
        assert_eq!(req.query(), Some("x=1&y=2"));
        assert_eq!(req.header("x-test"), Some("yes"));
        assert_eq!(Request::new("GET", "/").query(), None);
    }

    #[test]
    fn text_response_sets_content_type() {
        let resp = Response::text(200, "hi");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body(), b"hi");
        assert_eq!(
            resp.headers(),
            &[(
                "content-type".to_string(),
                "text/plain; charset=utf-8".to_string()
            )]
        );
    }
}
