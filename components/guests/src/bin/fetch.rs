//! Sends one request through `wasi:http/outgoing-handler`: `GET` of the URL
//! in `FETCH_URL` (or `POST` of `FETCH_BODY`, when set), and prints the
//! status and body, or the error code the host gave.
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

fn main() {
    let url = std::env::var("FETCH_URL").unwrap_or_default();
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some((_, rest)) => (Scheme::Http, rest),
        None => (Scheme::Http, url.as_str()),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let body_text = std::env::var("FETCH_BODY").ok();
    if body_text.is_some() {
        let _ = request.set_method(&Method::Post);
    }
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let body = request.body().expect("the request's body");
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => {
            println!("error {code:?}");
            std::process::exit(2);
        }
    };
    if let Some(text) = body_text {
        let stream = body.write().expect("the body's stream");
        stream
            .blocking_write_and_flush(text.as_bytes())
            .expect("writing the body");
        drop(stream);
    }
    OutgoingBody::finish(body, None).expect("finishing the body");
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => {
            println!("error {code:?}");
            std::process::exit(2);
        }
        other => {
            println!("error {other:?}");
            std::process::exit(3);
        }
    };
    println!("status {}", response.status());
    let body = response.consume().expect("the response's body");
    let stream = body.stream().expect("the body's stream");
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => {
                println!("error reading the body: {e:?}");
                std::process::exit(4);
            }
        }
    }
    println!("body {}", String::from_utf8_lossy(&bytes));
}
