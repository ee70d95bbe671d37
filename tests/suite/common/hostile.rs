//! A hostile registry for tests: a small HTTP/1.1 server on `127.0.0.1:<free port>`
//! (std's `TcpListener`, a thread per connection) that speaks enough of the registry API
//! v2 (`/v2/`, manifests by tag and digest, blobs, `HEAD`) to serve an image honestly,
//! and lets a test replace any answer with a broken one: wrong bytes, short and long
//! bodies, endless streams, redirect loops, silence. Real sockets, real HTTP: only the
//! registry's behaviour is made up, because a well-behaved registry cannot be made to
//! misbehave.
//!
//! Every request is recorded (method, path, headers). The guard stops the server on
//! drop: the accept loop ends, and connections that stream or stay silent end too.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::registry::sha256_hex;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The first byte asked for by a `Range: bytes=N-` header.
    pub fn range_start(&self) -> Option<u64> {
        self.header("range")?.strip_prefix("bytes=")?.split('-').next()?.parse().ok()
    }
}

/// What follows the status line and headers.
pub enum Body {
    /// These bytes, then the connection is closed.
    Bytes(Vec<u8>),
    /// These bytes repeated until the client goes away.
    Endless(Vec<u8>),
    /// These bytes, then nothing more, with the connection held open.
    Stall(Vec<u8>),
}

/// An answer. Without `content_length` the body is delimited by closing the connection.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub content_length: Option<u64>,
    pub body: Body,
}

impl Reply {
    pub fn new(status: u16, body: Vec<u8>) -> Reply {
        Reply { status, headers: vec![], content_length: Some(body.len() as u64), body: Body::Bytes(body) }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// No answer at all: the request is read and the connection held open.
    pub fn silent() -> Reply {
        Reply { status: 0, headers: vec![], content_length: None, body: Body::Stall(vec![]) }
    }

    pub fn redirect(location: &str) -> Reply {
        Reply::new(302, vec![]).header("Location", location)
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

pub struct Hostile {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Request>>>,
    accept: Option<JoinHandle<()>>,
}

impl Hostile {
    /// Starts a server whose every answer `handler` decides.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (stop, requests, handler) = (stop.clone(), requests.clone(), handler.clone());
                            std::thread::spawn(move || serve(stream, &*handler, &requests, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Hostile { port, stop, requests, accept: Some(accept) }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything asked so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many requests had a path ending in `suffix`.
    pub fn count(&self, suffix: &str) -> usize {
        self.requests().iter().filter(|r| r.path.ends_with(suffix)).count()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Reads one request; None for anything that is not HTTP (a TLS probe) or a timeout.
fn read_request(stream: &TcpStream) -> Option<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut first = [0u8; 1];
    stream.peek(&mut first).ok()?;
    if !first[0].is_ascii_uppercase() {
        return None;
    }
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = BTreeMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
        }
    }
    Some(Request { method, path, headers })
}

fn serve(mut stream: TcpStream, handler: &Handler, requests: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    let Some(request) = read_request(&stream) else { return };
    requests.lock().unwrap_or_else(|p| p.into_inner()).push(request.clone());
    let reply = handler(&request);
    let hold = |stream: &TcpStream| {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
    };
    if reply.status == 0 {
        return hold(&stream);
    }
    let mut head = format!("HTTP/1.1 {} X\r\nConnection: close\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(len) = reply.content_length {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || request.method == "HEAD" {
        return;
    }
    match reply.body {
        Body::Bytes(bytes) => {
            let _ = stream.write_all(&bytes);
        }
        Body::Endless(pattern) => while !stop.load(Ordering::Relaxed) && stream.write_all(&pattern).is_ok() {},
        Body::Stall(bytes) => {
            if stream.write_all(&bytes).is_ok() {
                hold(&stream);
            }
        }
    }
    // Drain what the client may still send, so that closing does not reset the body.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.read(&mut [0u8; 512]);
}

/// An image served honestly: manifests by tag and by digest, blobs by digest, with
/// `Range` honoured as distribution does.
#[derive(Clone, Default)]
pub struct Content {
    /// By tag and by `sha256:…`: (media type, bytes).
    pub manifests: BTreeMap<String, (String, Vec<u8>)>,
    /// By `sha256:…`.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

impl Content {
    /// Adds a manifest under `tag` and its digest; returns the digest.
    pub fn manifest(&mut self, tag: &str, media_type: &str, bytes: Vec<u8>) -> String {
        let digest = format!("sha256:{}", sha256_hex(&bytes));
        self.manifests.insert(tag.to_owned(), (media_type.to_owned(), bytes.clone()));
        self.manifests.insert(digest.clone(), (media_type.to_owned(), bytes));
        digest
    }

    /// Adds a blob; returns its digest.
    pub fn blob(&mut self, bytes: Vec<u8>) -> String {
        let digest = format!("sha256:{}", sha256_hex(&bytes));
        self.blobs.insert(digest.clone(), bytes);
        digest
    }

    /// The honest answer to `request`.
    pub fn answer(&self, request: &Request) -> Reply {
        let not_found = || {
            Reply::new(404, br#"{"errors":[{"code":"NOT_FOUND","message":"not here"}]}"#.to_vec())
                .header("Content-Type", "application/json")
        };
        let path = request.path.split('?').next().unwrap_or("");
        if path == "/v2/" {
            return Reply::new(200, b"{}".to_vec()).header("Content-Type", "application/json");
        }
        if let Some((_, name)) = path.rsplit_once("/manifests/") {
            return match self.manifests.get(name) {
                Some((media_type, bytes)) => Reply::new(200, bytes.clone())
                    .header("Content-Type", media_type)
                    .header("Docker-Content-Digest", &format!("sha256:{}", sha256_hex(bytes))),
                None => not_found(),
            };
        }
        if let Some((_, digest)) = path.rsplit_once("/blobs/") {
            let Some(bytes) = self.blobs.get(digest) else { return not_found() };
            return match request.range_start().filter(|&start| start > 0 && start < bytes.len() as u64) {
                Some(start) => Reply::new(206, bytes[start as usize..].to_vec())
                    .header("Content-Range", &format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len())),
                None => Reply::new(200, bytes.clone()),
            };
        }
        not_found()
    }
}
