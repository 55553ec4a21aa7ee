//! A loopback HTTP/1.1 server for fetch tests, std only.
//!
//! [`Server::start`] binds `127.0.0.1:0` and serves from a background thread until the value is
//! dropped. Each path has a script of [`Reply`]s served in order (the last one repeats); unknown
//! paths get `404`. Every request that arrives is recorded, so a test can assert what was sent
//! (headers, how many attempts) as well as what came back. Each connection is handled in its own
//! thread, one request per connection (`Connection: close`), so a delayed reply never blocks
//! another request.
//!
//! ```no_run
//! use testkit::http::{Reply, Server};
//! let server = Server::start();
//! server.route("/ips-v4", vec![Reply::status(503), Reply::ok("173.245.48.0/20")]);
//! let url = server.url("/ips-v4");
//! // ... fetch `url` twice ...
//! assert_eq!(server.hits("/ips-v4"), 2);
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long a connection may take to send its request head before the server gives up on it.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head the server accepts (a fetch client sends a few hundred bytes).
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// One scripted answer: status, headers, body, and the misbehaviours a test may need.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// Extra response headers, sent as given. `Content-Length` is added unless present here.
    pub headers: Vec<(String, String)>,
    /// The full body (the `Content-Length` the server announces is this length).
    pub body: Vec<u8>,
    /// How long to wait, after the request arrived, before sending anything.
    pub delay: Duration,
    /// Send only this many bytes of the body, then close: a truncated response.
    pub truncate_to: Option<usize>,
    /// Send the body with `Transfer-Encoding: chunked` instead of a `Content-Length`, so the
    /// client cannot know its size in advance. With `truncate_to`, the final chunk never comes.
    pub chunked: bool,
}

impl Reply {
    /// `200 OK` with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::status(200).body(body)
    }

    /// An empty response with status `code`.
    pub fn status(code: u16) -> Reply {
        Reply {
            status: code,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            truncate_to: None,
            chunked: false,
        }
    }

    /// A redirect (`code` is 301, 302, 303, 307 or 308) to `location`, sent verbatim.
    pub fn redirect(code: u16, location: &str) -> Reply {
        Reply::status(code).header("Location", location)
    }

    /// Adds a response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Waits `delay` before responding (to trigger client timeouts).
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// Announces the full body length but sends only `n` bytes of it, then closes.
    pub fn truncate(mut self, n: usize) -> Reply {
        self.truncate_to = Some(n);
        self
    }

    /// Sends the body chunked (no `Content-Length`), in chunks of at most 16 KiB.
    pub fn chunked(mut self) -> Reply {
        self.chunked = true;
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }
}

/// A request as it arrived at the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The path of the request target, without the query.
    pub path: String,
    /// The query (after `?`), if any.
    pub query: Option<String>,
    /// Headers in arrival order, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A path's script: replies in order, the last one repeating.
struct Route {
    replies: Vec<Reply>,
    served: usize,
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Route>>,
    requests: Mutex<Vec<Request>>,
}

/// A real HTTP/1.1 server on `127.0.0.1`, stopped when dropped.
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `127.0.0.1:0` and starts serving in a background thread.
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local_addr of the test server");
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name(format!("testkit-http-{}", addr.port()))
                .spawn(move || accept_loop(listener, state, stop))
                .expect("spawn the test server's accept thread")
        };
        Server {
            addr,
            state,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path` (which should start with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Scripts `path`: requests get `responses` in order, the last one repeating. Replaces any
    /// earlier script for `path` (and restarts it). An empty list makes `path` unknown (404).
    pub fn route(&self, path: &str, responses: Vec<Reply>) {
        let mut routes = lock(&self.state.routes);
        if responses.is_empty() {
            routes.remove(path);
        } else {
            routes.insert(
                path.to_string(),
                Route {
                    replies: responses,
                    served: 0,
                },
            );
        }
    }

    /// Every request that has arrived so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.state.requests).clone()
    }

    /// How many requests for `path` (ignoring any query) have arrived.
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept loop polls the flag. Connection threads still sleeping on a delayed reply
        // are left to finish on their own.
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Locks `m`, ignoring poison: a panicking test thread must not hide the server's records.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: TcpListener, state: Arc<State>, stop: Arc<AtomicBool>) {
    // Polled, not blocking: Drop must not depend on reaching the listener (a test's firewall may
    // drop loopback traffic, or the listener may live in a network namespace).
    listener
        .set_nonblocking(true)
        .expect("non-blocking test listener");
    while !stop.load(Ordering::SeqCst) {
        let conn = match listener.accept() {
            Ok((conn, _)) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        let _ = conn.set_nonblocking(false);
        let state = Arc::clone(&state);
        // Detached: a delayed reply must not hold up the accept loop or Drop.
        let _ = thread::Builder::new()
            .name("testkit-http-conn".into())
            .spawn(move || {
                let _ = handle(conn, &state);
            });
    }
}

/// Serves one request on `conn`, then closes it.
fn handle(conn: TcpStream, state: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(REQUEST_READ_TIMEOUT))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let Some(request) = read_request(&mut reader)? else {
        return Ok(()); // closed before a full request head: e.g. the wake-up connection
    };
    let reply = {
        let mut routes = lock(&state.routes);
        match routes.get_mut(&request.path) {
            Some(route) => {
                let i = route.served.min(route.replies.len() - 1);
                route.served += 1;
                route.replies[i].clone()
            }
            None => Reply::status(404).body("not found\n"),
        }
    };
    let head_only = request.method.eq_ignore_ascii_case("HEAD");
    lock(&state.requests).push(request);

    if !reply.delay.is_zero() {
        thread::sleep(reply.delay);
    }
    let mut conn = conn;
    write_reply(&mut conn, &reply, head_only)?;
    conn.flush()?;
    // Half-close first so the client sees a clean end of stream (a FIN, not a reset), which
    // for a truncated reply is exactly "the server closed before the body was complete".
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}

/// Reads a request head and discards any body. `None` when the peer closed first.
fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut head_len = 0;
    let mut line = String::new();
    let mut next_line = |reader: &mut BufReader<TcpStream>, line: &mut String| {
        line.clear();
        let n = reader.read_line(line)?;
        head_len += n;
        if head_len > MAX_REQUEST_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
        Ok::<usize, std::io::Error>(n)
    };

    if next_line(reader, &mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let method = method.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };

    let mut headers = Vec::new();
    loop {
        if next_line(reader, &mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let request = Request {
        method,
        path,
        query,
        headers,
    };
    let body_len: u64 = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if body_len > 0 {
        std::io::copy(&mut reader.take(body_len), &mut std::io::sink())?;
    }
    Ok(Some(request))
}

fn write_reply(conn: &mut TcpStream, reply: &Reply, head_only: bool) -> std::io::Result<()> {
    // 1xx, 204 and 304 never carry a body (RFC 9110 §6.4.1).
    let bodyless = reply.status < 200 || reply.status == 204 || reply.status == 304;
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !bodyless && reply.chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else if !bodyless && !reply.has_header("content-length") {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    if bodyless || head_only {
        return Ok(());
    }
    let n = reply
        .truncate_to
        .unwrap_or(reply.body.len())
        .min(reply.body.len());
    let body = &reply.body[..n];
    if !reply.chunked {
        return conn.write_all(body);
    }
    for chunk in body.chunks(16 * 1024) {
        conn.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
        conn.write_all(chunk)?;
        conn.write_all(b"\r\n")?;
    }
    if reply.truncate_to.is_none() {
        conn.write_all(b"0\r\n\r\n")?;
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal client: sends a GET and returns the raw response.
    fn get(server: &Server, path: &str) -> String {
        let mut s = TcpStream::connect(server.addr()).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nX-Test: Yes\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn scripted_replies_in_order_last_repeats() {
        let server = Server::start();
        server.route("/a", vec![Reply::status(503), Reply::ok("hello")]);
        assert!(get(&server, "/a").starts_with("HTTP/1.1 503 "));
        assert!(get(&server, "/a").ends_with("\r\n\r\nhello"));
        assert!(get(&server, "/a?x=1").ends_with("\r\n\r\nhello"));
        assert!(get(&server, "/nope").starts_with("HTTP/1.1 404 "));
        assert_eq!(server.hits("/a"), 3);
        let reqs = server.requests();
        assert_eq!(reqs.len(), 4);
        assert_eq!(reqs[0].header("X-TEST"), Some("Yes"));
        assert_eq!(reqs[2].query.as_deref(), Some("x=1"));
    }

    #[test]
    fn truncated_reply_announces_full_length() {
        let server = Server::start();
        server.route("/t", vec![Reply::ok("0123456789").truncate(4)]);
        let out = get(&server, "/t");
        assert!(out.contains("Content-Length: 10\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n0123"), "{out}");
    }

    #[test]
    fn chunked_reply() {
        let server = Server::start();
        server.route("/c", vec![Reply::ok("hello").chunked()]);
        let out = get(&server, "/c");
        assert!(out.contains("Transfer-Encoding: chunked\r\n"), "{out}");
        assert!(!out.contains("Content-Length"), "{out}");
        assert!(out.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), "{out}");
    }

    #[test]
    fn a_slow_reply_does_not_block_others() {
        let server = Server::start();
        server.route(
            "/slow",
            vec![Reply::ok("slow").delay(Duration::from_secs(2))],
        );
        server.route("/fast", vec![Reply::ok("fast")]);
        let mut slow = TcpStream::connect(server.addr()).unwrap();
        write!(slow, "GET /slow HTTP/1.1\r\n\r\n").unwrap();
        let t = std::time::Instant::now();
        assert!(get(&server, "/fast").ends_with("fast"));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
