//! A wasi:http/proxy component built with the `wasi` crate. `/` answers
//! `200 Hello, WASI!` and does nothing else, so a benchmark of it measures the
//! server around it (`wasmtime serve` and `kiln serve` run the same bytes).
//! The other paths exist for Kiln's tests: they echo the request, choose a
//! status, write to stdout and stderr, or misbehave the ways a hostile
//! function would (spin, grow, hoard header fields on the host, fetch).

use std::io::{Read as _, Write as _};

use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasi::http::proxy::export!(Hello);

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        match route {
            "/echo" => echo(request, response_out),
            "/status" => {
                let status = query.parse().unwrap_or(200);
                respond(response_out, status, &[("x-chosen", b"yes")], b"chosen\n");
            }
            "/print" => {
                println!("to stdout");
                eprintln!("to stderr");
                respond(response_out, 200, &[], b"printed\n");
            }
            "/spin" => spin(),
            "/grow" => grow(),
            "/big" => {
                let megabytes = query.parse().unwrap_or(1);
                respond(response_out, 200, &[], &vec![b'x'; megabytes << 20]);
            }
            "/fetch" => fetch(response_out),
            "/fields" => {
                let value_bytes = query.parse().unwrap_or(60 << 10);
                hoard_fields(value_bytes);
                respond(response_out, 200, &[], b"held\n");
            }
            // Returns without setting a response.
            "/none" => {}
            _ => respond(
                response_out,
                200,
                &[("content-type", b"text/plain")],
                b"Hello, WASI!\n",
            ),
        }
    }
}

/// Answers with the method, path, query, every `x-` header and the body.
fn echo(request: IncomingRequest, response_out: ResponseOutparam) {
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Other(other) => other,
    };
    let mut text = format!(
        "{method} {}\n",
        request.path_with_query().unwrap_or_default()
    );
    for (name, value) in request.headers().entries() {
        if name.starts_with("x-") {
            text.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(&value)));
        }
    }
    let mut body = Vec::new();
    if let Ok(incoming) = request.consume()
        && let Ok(mut stream) = incoming.stream()
    {
        let _ = stream.read_to_end(&mut body);
    }
    text.push('\n');
    let mut answer = text.into_bytes();
    answer.extend_from_slice(&body);
    respond(response_out, 201, &[("x-echoed", b"1")], &answer);
}

fn respond(
    response_out: ResponseOutparam,
    status: u16,
    headers: &[(&str, &[u8])],
    body_bytes: &[u8],
) {
    let fields = Fields::new();
    for (name, value) in headers {
        // Fails only for forbidden header names; these are not.
        let _ = fields.append(name, value);
    }
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let Ok(body) = response.body() else { return };
    ResponseOutparam::set(response_out, Ok(response));
    if let Ok(mut out) = body.write() {
        // write_all goes through blocking-write-and-flush in 4 KiB pieces.
        let _ = out.write_all(body_bytes);
        let _ = out.flush();
    }
    let _ = OutgoingBody::finish(body, None);
}

/// Never returns: the deadline or the fuel budget must stop it.
fn spin() {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Makes the host hold header fields, 8 000 sets of one `value_bytes`
/// value each, and keeps them all: the host's own caps must stop it.
fn hoard_fields(value_bytes: usize) {
    let value = vec![b'v'; value_bytes];
    let mut hoard = Vec::new();
    for _ in 0..8_000 {
        match Fields::from_list(&[("x-hoard".to_string(), value.clone())]) {
            Ok(fields) => hoard.push(fields),
            Err(_) => break,
        }
    }
    std::hint::black_box(&hoard);
}

/// Allocates until the memory cap refuses it.
fn grow() {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

/// Tries an outgoing request; the sandbox must refuse it. Answers with what
/// the host said.
fn fetch(response_out: ResponseOutparam) {
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some("127.0.0.1:1"));
    let _ = request.set_path_with_query(Some("/"));
    let outcome = match wasi::http::outgoing_handler::handle(request, None) {
        Err(code) => format!("refused: {code:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(_))) => "sent".to_string(),
                Some(Ok(Err(code))) => format!("refused: {code:?}"),
                other => format!("refused: {other:?}"),
            }
        }
    };
    respond(response_out, 200, &[], outcome.as_bytes());
}
