//! The HTTP fetch layer: one GET with the safety rules of the spec, and nothing else.
//!
//! - **https only**, plain `http` only to a loopback host ([`check_url`]); every redirect hop is
//!   checked the same way and an https -> http downgrade is always refused.
//! - Redirects are followed here, not by ureq (at most [`MAX_REDIRECTS`]), so each hop is checked.
//! - One **attempt** (the whole redirect chain) has a total budget of [`HttpConfig::timeout`];
//!   failures to reach the server ([`FetchError::Unreachable`]) are retried with exponential
//!   backoff and full jitter; a bad answer ([`FetchError::Refused`]) never is.
//! - The body is read through a streamed cap of [`HttpConfig::max_bytes`]; a body cut short
//!   (fewer bytes than `Content-Length`, or a chunked body without its last chunk) is an error.
//!
//! The split between the two error kinds is the point of this module: the engine falls back to
//! its cache (add-only) for `Unreachable`, and stops with an error for `Refused`. A bad answer is
//! never mistaken for an outage.

use std::fmt;
use std::io::{self, Read};
use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use ureq::http::{HeaderValue, StatusCode, Uri};
use ureq::Agent;

/// The `User-Agent` sent with every request. Cloudflare blocks requests that have none.
pub const USER_AGENT: &str = concat!("cf-allowlist/", env!("CARGO_PKG_VERSION"));

/// The `Accept` header: the API's JSON first, then the text lists.
const ACCEPT: &str = "application/json, text/plain;q=0.9, */*;q=0.1";

/// The most redirects one fetch follows; one more is refused.
pub const MAX_REDIRECTS: u32 = 5;

/// The longest single backoff sleep, however many retries are configured.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Settings from the config's `fetch:` key.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Total time for one attempt: connecting, every redirect hop, and reading the body.
    pub timeout: Duration,
    /// Time to establish a connection (TCP and TLS); capped at `timeout`.
    pub connect_timeout: Duration,
    /// Extra attempts after the first, for failures to reach the server only.
    pub retries: u32,
    /// The largest body accepted, in bytes; a larger one is refused.
    pub max_bytes: u64,
    /// The first backoff; doubled on each retry (capped at 30 s), with full jitter.
    pub backoff: Duration,
    /// The certificate authorities TLS trusts: `None` is the bundled webpki roots (Mozilla's);
    /// `Some` replaces them with these (a mirror behind an internal CA, or the system store).
    pub roots: Option<Vec<ureq::tls::Certificate<'static>>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let timeout = Duration::from_secs(10);
        HttpConfig {
            timeout,
            connect_timeout: timeout.min(Duration::from_secs(5)),
            retries: 3,
            max_bytes: 1024 * 1024,
            backoff: Duration::from_millis(500),
            roots: None,
        }
    }
}

/// Reads the PEM certificates of `fetch.ca_file` (e.g. `/etc/ssl/certs/ca-certificates.crt`,
/// the system trust store, or an internal CA's certificate).
pub fn load_ca_file(
    path: &std::path::Path,
) -> Result<Vec<ureq::tls::Certificate<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(format!("{}: not PEM certificates: {e}", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// Conditional-request validators remembered from the last good fetch.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Validators {
    /// The `ETag` of the last good response, sent back as `If-None-Match`.
    pub etag: Option<String>,
    /// The `Last-Modified` of the last good response, sent back as `If-Modified-Since`.
    pub last_modified: Option<String>,
}

impl Validators {
    fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// A successful fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// `200 OK`: the body, and the validators to remember for the next fetch.
    Body {
        /// The body, valid UTF-8.
        body: String,
        /// The response's `ETag`, if any.
        etag: Option<String>,
        /// The response's `Last-Modified`, if any.
        last_modified: Option<String>,
        /// The URL that served the body, after redirects.
        url: String,
    },
    /// `304 Not Modified`: the list is unchanged; use the cached one.
    NotModified,
}

/// Why a fetch failed. The two kinds lead the engine to opposite decisions.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server could not be reached: DNS, connection refused or reset, a timeout, a truncated
    /// body, or 5xx / 429 after all retries. The engine falls back to the cache (add-only).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL that was asked for (the reason names a redirect target if that failed).
        url: String,
        /// What went wrong, e.g. `connection refused after 4 attempts`.
        reason: String,
    },
    /// The server answered badly, or policy refused the request: 4xx (not 429), plain http to a
    /// non-loopback host, a refused redirect, more than 5 redirects, a body over the cap or not
    /// UTF-8, a malformed URL. Never retried, never treated as an outage.
    #[error("fetching {url} failed: {reason}")]
    Refused {
        /// The URL that was asked for.
        url: String,
        /// What was wrong, e.g. `HTTP 404 Not Found`.
        reason: String,
    },
}

impl FetchError {
    /// The URL that was asked for.
    pub fn url(&self) -> &str {
        match self {
            FetchError::Unreachable { url, .. } | FetchError::Refused { url, .. } => url,
        }
    }

    /// The cause, without the URL.
    pub fn reason(&self) -> &str {
        match self {
            FetchError::Unreachable { reason, .. } | FetchError::Refused { reason, .. } => reason,
        }
    }

    /// True for an outage (fall back to the cache), false for a bad answer or a policy refusal.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FetchError::Unreachable { .. })
    }
}

fn refused(url: &str, reason: impl Into<String>) -> FetchError {
    FetchError::Refused {
        url: url.to_string(),
        reason: reason.into(),
    }
}

fn unreachable(url: &str, reason: impl Into<String>) -> FetchError {
    FetchError::Unreachable {
        url: url.to_string(),
        reason: reason.into(),
    }
}

/// Accepts `https` URLs, and plain `http` only when the host is a loopback address
/// (`127.0.0.0/8`, `::1`, `localhost`): tests and local mirrors. Anything else is
/// [`FetchError::Refused`].
pub fn check_url(url: &str) -> Result<(), FetchError> {
    let uri = parse_url(url).map_err(|reason| refused(url, reason))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if scheme.eq_ignore_ascii_case("https") {
        Ok(())
    } else if scheme.eq_ignore_ascii_case("http") {
        if is_loopback_host(uri.host().unwrap_or_default()) {
            Ok(())
        } else {
            Err(refused(
                url,
                "plain http is allowed only to a loopback host (127.0.0.0/8, ::1, localhost); \
                 use https",
            ))
        }
    } else {
        Err(refused(
            url,
            format!("unsupported URL scheme {scheme:?}: https is required"),
        ))
    }
}

/// Parses an absolute URL with a scheme and a host.
fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("malformed URL {url:?}: {e}"))?;
    if uri.scheme_str().is_none() {
        return Err(format!("malformed URL {url:?}: no scheme"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("malformed URL {url:?}: no host"));
    }
    Ok(uri)
}

/// `localhost`, or an address in `127.0.0.0/8` or `::1` (brackets allowed).
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.eq_ignore_ascii_case("localhost.")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_loopback_url(url: &str) -> bool {
    parse_url(url).is_ok_and(|u| is_loopback_host(u.host().unwrap_or_default()))
}

fn is_https(url: &str) -> bool {
    parse_url(url).is_ok_and(|u| {
        u.scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"))
    })
}

/// May a fetch at `from` follow a redirect to `to`? `Err` holds the reason.
fn check_redirect(from: &str, to: &str) -> Result<(), String> {
    check_url(to).map_err(|e| e.reason().to_string())?;
    if is_https(from) && !is_https(to) {
        return Err("a redirect from https to plain http is never followed".into());
    }
    Ok(())
}

/// Resolves a `Location` header against the URL that sent it (RFC 3986 §5.2, without dot-segment
/// removal, which the servers we talk to never need).
fn resolve_location(base: &str, location: &str) -> Result<String, String> {
    let location = location.trim();
    let location = location.split('#').next().unwrap_or_default();
    if location.is_empty() {
        return Err("an empty Location header".into());
    }
    if has_scheme(location) {
        return Ok(location.to_string());
    }
    let base = parse_url(base)?;
    let scheme = base.scheme_str().unwrap_or_default();
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    if location.starts_with("//") {
        return Ok(format!("{scheme}:{location}"));
    }
    if location.starts_with('/') {
        return Ok(format!("{scheme}://{authority}{location}"));
    }
    let path = base.path();
    if location.starts_with('?') {
        return Ok(format!("{scheme}://{authority}{path}{location}"));
    }
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Ok(format!("{scheme}://{authority}{dir}{location}"))
}

/// RFC 3986 `scheme ":"`: a letter, then letters, digits, `+`, `-` or `.`.
fn has_scheme(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, _)) => {
            let mut chars = scheme.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

/// `HTTP 503 Service Unavailable`.
fn describe_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// The header's value, when it is present and printable.
fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The outcome of one hop: an answer, or a redirect to follow.
enum Hop {
    Done(Response),
    Redirect(String),
}

/// Fetches URLs with the spec's rules. Cheap to share: one per run.
#[derive(Clone)]
pub struct Fetcher {
    config: HttpConfig,
    /// For remote hosts: honours `HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY` from the environment.
    agent: Agent,
    /// For loopback hosts: never through a proxy (a local mirror or a test server).
    direct: Agent,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher with `config`. Builds the HTTP agents (TLS roots: `config.roots`, by default
    /// the bundled webpki roots).
    pub fn new(config: HttpConfig) -> Self {
        let connect_timeout = config.connect_timeout.min(config.timeout);
        let roots = match &config.roots {
            Some(certs) => ureq::tls::RootCerts::new_with_certs(certs),
            None => ureq::tls::RootCerts::WebPki,
        };
        let tls = ureq::tls::TlsConfig::builder().root_certs(roots).build();
        let builder = || {
            Agent::config_builder()
                .tls_config(tls.clone())
                // Statuses and redirects are ours to judge: 4xx is Refused, 5xx is retried,
                // and every redirect hop goes through check_url.
                .http_status_as_error(false)
                .max_redirects(0)
                .user_agent(USER_AGENT)
                .accept(ACCEPT)
                .timeout_connect(Some(connect_timeout))
        };
        let agent = builder().build().new_agent();
        let direct = builder().proxy(None).build().new_agent();
        Fetcher {
            config,
            agent,
            direct,
        }
    }

    /// The settings this fetcher was built with.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// GETs `url` with `User-Agent`, `Accept`, and `If-None-Match` / `If-Modified-Since` from
    /// `validators`. Follows at most 5 redirects, checking each hop with [`check_url`] and never
    /// going from https to http. Retries [`FetchError::Unreachable`] failures with exponential
    /// backoff and full jitter, logging each retry; returns the last failure with the number of
    /// attempts made.
    pub fn get(&self, url: &str, validators: &Validators) -> Result<Response, FetchError> {
        check_url(url)?;
        let attempts = self.config.retries.saturating_add(1);
        let mut attempt = 1;
        loop {
            let err = match self.attempt(url, validators) {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            let FetchError::Unreachable { url: _, reason } = err else {
                return Err(err);
            };
            if attempt >= attempts {
                let plural = if attempt == 1 { "" } else { "s" };
                return Err(unreachable(
                    url,
                    format!("{reason} after {attempt} attempt{plural}"),
                ));
            }
            let delay = self.backoff(attempt);
            tracing::info!(
                url,
                attempt,
                attempts,
                reason = %reason,
                retry_in_ms = delay.as_millis() as u64,
                "fetch failed, retrying"
            );
            thread::sleep(delay);
            attempt += 1;
        }
    }

    /// Full jitter: a uniform sleep in `[0, backoff * 2^(attempt-1)]`, capped at 30 s.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let ceiling = self
            .config
            .backoff
            .checked_mul(factor)
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// One attempt: the whole redirect chain within one `timeout` budget.
    fn attempt(&self, url: &str, validators: &Validators) -> Result<Response, FetchError> {
        let deadline = Instant::now() + self.config.timeout;
        let mut current = url.to_string();
        let mut redirects = 0;
        loop {
            let hop = self.hop(&current, validators, deadline).map_err(|e| {
                // Name the hop in the reason when it is not the URL asked for.
                let (kind_unreachable, reason) = (e.is_unreachable(), e.reason().to_string());
                let reason = if current == url {
                    reason
                } else {
                    format!("at {current}: {reason}")
                };
                if kind_unreachable {
                    unreachable(url, reason)
                } else {
                    refused(url, reason)
                }
            })?;
            match hop {
                Hop::Done(response) => return Ok(response),
                Hop::Redirect(next) => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(refused(
                            url,
                            format!("more than {MAX_REDIRECTS} redirects (the last to {next})"),
                        ));
                    }
                    check_redirect(&current, &next).map_err(|why| {
                        refused(url, format!("redirect to {next} refused: {why}"))
                    })?;
                    tracing::debug!(from = %current, to = %next, "following redirect");
                    current = next;
                }
            }
        }
    }

    /// One request to `url`. Errors carry `url` (the hop); `attempt` rewrites them.
    fn hop(
        &self,
        url: &str,
        validators: &Validators,
        deadline: Instant,
    ) -> Result<Hop, FetchError> {
        let timeout = self.config.timeout;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(unreachable(url, format!("timed out after {timeout:?}")));
        }
        let agent = if is_loopback_url(url) {
            &self.direct
        } else {
            &self.agent
        };
        let mut request = agent
            .get(url)
            .config()
            .timeout_global(Some(remaining))
            .build();
        // Validators come from the state file: one that is not a valid header value is dropped
        // (the fetch then simply is not conditional) rather than failing the fetch.
        let conditional = [
            ("If-None-Match", &validators.etag),
            ("If-Modified-Since", &validators.last_modified),
        ];
        for (name, value) in conditional {
            if let Some(value) = value {
                if HeaderValue::from_str(value).is_ok() {
                    request = request.header(name, value.as_str());
                } else {
                    tracing::debug!(
                        header = name,
                        value,
                        "ignoring an unusable cached validator"
                    );
                }
            }
        }
        let mut resp = request.call().map_err(|e| self.ureq_error(url, e))?;

        let status = resp.status();
        match status.as_u16() {
            200 => {}
            304 if !validators.is_empty() => return Ok(Hop::Done(Response::NotModified)),
            304 => {
                return Err(refused(
                    url,
                    "HTTP 304 Not Modified to a request that was not conditional",
                ))
            }
            301 | 302 | 303 | 307 | 308 => {
                let location = header(&resp, "location").ok_or_else(|| {
                    refused(
                        url,
                        format!("{} without a Location header", describe_status(status)),
                    )
                })?;
                let next = resolve_location(url, &location).map_err(|why| {
                    refused(url, format!("redirect to {location:?} refused: {why}"))
                })?;
                return Ok(Hop::Redirect(next));
            }
            429 | 500..=599 => return Err(unreachable(url, describe_status(status))),
            _ => return Err(refused(url, describe_status(status))),
        }

        let etag = header(&resp, "etag");
        let last_modified = header(&resp, "last-modified");
        let body = self.read_body(url, &mut resp)?;
        Ok(Hop::Done(Response::Body {
            body,
            etag,
            last_modified,
            url: url.to_string(),
        }))
    }

    /// Reads the body through the streamed cap; checks it is complete and UTF-8.
    fn read_body(
        &self,
        url: &str,
        resp: &mut ureq::http::Response<ureq::Body>,
    ) -> Result<String, FetchError> {
        let max = self.config.max_bytes;
        let too_big = || refused(url, format!("body exceeds {max} bytes"));
        let expected = resp.body().content_length();
        if expected.is_some_and(|len| len > max) {
            return Err(too_big());
        }
        let mut buf = Vec::new();
        let read = resp
            .body_mut()
            .with_config()
            .limit(max)
            .reader()
            .read_to_end(&mut buf);
        let truncated = |got: usize| match expected {
            Some(len) => format!(
                "body truncated: the connection closed after {got} of {len} bytes (Content-Length)"
            ),
            None => format!("body truncated: the connection closed after {got} bytes"),
        };
        if let Err(e) = read {
            // ureq's body reader wraps its own errors in io::Error; From unwraps them.
            return Err(match ureq::Error::from(e) {
                ureq::Error::BodyExceedsLimit(_) => too_big(),
                ureq::Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    unreachable(url, truncated(buf.len()))
                }
                other => self.ureq_error(url, other),
            });
        }
        // ureq reports a short body as UnexpectedEof; this check keeps that promise ours.
        if expected.is_some_and(|len| len != buf.len() as u64) {
            return Err(unreachable(url, truncated(buf.len())));
        }
        String::from_utf8(buf)
            .map_err(|e| refused(url, format!("body is not valid UTF-8: {}", e.utf8_error())))
    }

    /// Sorts a ureq error into an outage or a refusal, with a plain-words reason.
    fn ureq_error(&self, url: &str, err: ureq::Error) -> FetchError {
        use ureq::Error as E;
        match err {
            E::Io(e) => unreachable(url, describe_io(&e)),
            E::Timeout(ureq::Timeout::Connect) => unreachable(
                url,
                format!(
                    "connect timed out after {:?}",
                    self.config.connect_timeout.min(self.config.timeout)
                ),
            ),
            E::Timeout(_) => unreachable(url, format!("timed out after {:?}", self.config.timeout)),
            E::HostNotFound => unreachable(url, "host not found (DNS lookup failed)"),
            E::ConnectionFailed => unreachable(url, "connection failed"),
            // A connection that could not be secured (bad certificate, interception, handshake
            // failure): nothing was answered, so this is an outage, not a bad list.
            E::Tls(e) => unreachable(url, format!("TLS: {e}")),
            E::Rustls(e) => unreachable(url, format!("TLS: {e}")),
            E::Protocol(e) => unreachable(url, format!("malformed HTTP response: {e}")),
            E::ConnectProxyFailed(e) => unreachable(url, format!("proxy CONNECT failed: {e}")),
            E::BadUri(e) => refused(url, format!("malformed URL: {e}")),
            E::Http(e) => refused(url, format!("invalid request: {e}")),
            E::LargeResponseHeader(size, max) => refused(
                url,
                format!("response headers too large ({size} > {max} bytes)"),
            ),
            E::BodyExceedsLimit(_) => {
                refused(url, format!("body exceeds {} bytes", self.config.max_bytes))
            }
            other => unreachable(url, other.to_string()),
        }
    }
}

/// An I/O error in words an operator reads in a log line.
fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::ConnectionAborted => "connection aborted".into(),
        io::ErrorKind::UnexpectedEof => "connection closed before a complete response".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        // ureq reports a failed name lookup as std's resolver error, not as HostNotFound.
        _ if e.to_string().contains("failed to lookup address") => {
            format!("host not found (DNS): {e}")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use testkit::http::{Reply, Server};

    /// Small timeouts and backoffs keep the suite fast.
    fn fast() -> HttpConfig {
        HttpConfig {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retries: 3,
            max_bytes: 1024 * 1024,
            backoff: Duration::from_millis(10),
            roots: None,
        }
    }

    fn fetcher() -> Fetcher {
        Fetcher::new(fast())
    }

    fn none() -> Validators {
        Validators::default()
    }

    fn body_of(r: Response) -> (String, Option<String>, Option<String>, String) {
        match r {
            Response::Body {
                body,
                etag,
                last_modified,
                url,
            } => (body, etag, last_modified, url),
            Response::NotModified => panic!("expected a body, got NotModified"),
        }
    }

    /// Cloudflare's published `ips-v4` (no trailing newline, as served).
    const V4: &str = concat!(
        "173.245.48.0/20\n",
        "103.21.244.0/22\n",
        "103.22.200.0/22\n",
        "103.31.4.0/22\n",
        "141.101.64.0/18\n",
        "108.162.192.0/18\n",
        "190.93.240.0/20\n",
        "188.114.96.0/20\n",
        "197.234.240.0/22\n",
        "198.41.128.0/17\n",
        "162.158.0.0/15\n",
        "104.16.0.0/13\n",
        "104.24.0.0/14\n",
        "172.64.0.0/13\n",
        "131.0.72.0/22"
    );

    #[test]
    fn ok_returns_body_and_validators() {
        let server = Server::start();
        server.route(
            "/ips-v4",
            vec![Reply::ok(V4)
                .header("ETag", "\"abc123\"")
                .header("Last-Modified", "Tue, 02 Jan 2024 03:04:05 GMT")],
        );
        let url = server.url("/ips-v4");
        let (body, etag, lm, final_url) = body_of(fetcher().get(&url, &none()).unwrap());
        assert_eq!(body, V4);
        assert_eq!(etag.as_deref(), Some("\"abc123\""));
        assert_eq!(lm.as_deref(), Some("Tue, 02 Jan 2024 03:04:05 GMT"));
        assert_eq!(final_url, url);
    }

    #[test]
    fn sends_user_agent_and_accept() {
        let server = Server::start();
        server.route("/x", vec![Reply::ok("1.1.1.0/24")]);
        fetcher().get(&server.url("/x"), &none()).unwrap();
        let reqs = server.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].method, "GET");
        assert_eq!(reqs[0].header("user-agent"), Some(USER_AGENT));
        assert!(USER_AGENT.starts_with("cf-allowlist/"));
        assert_eq!(reqs[0].header("accept"), Some(ACCEPT));
        assert_eq!(reqs[0].header("if-none-match"), None);
    }

    #[test]
    fn conditional_request_and_304_is_not_modified() {
        let server = Server::start();
        server.route("/x", vec![Reply::status(304)]);
        let validators = Validators {
            etag: Some("\"abc123\"".into()),
            last_modified: Some("Tue, 02 Jan 2024 03:04:05 GMT".into()),
        };
        let r = fetcher().get(&server.url("/x"), &validators).unwrap();
        assert_eq!(r, Response::NotModified);
        let req = &server.requests()[0];
        assert_eq!(req.header("if-none-match"), Some("\"abc123\""));
        assert_eq!(
            req.header("if-modified-since"),
            Some("Tue, 02 Jan 2024 03:04:05 GMT")
        );
    }

    #[test]
    fn unconditional_304_is_refused() {
        let server = Server::start();
        server.route("/x", vec![Reply::status(304)]);
        let err = fetcher().get(&server.url("/x"), &none()).unwrap_err();
        assert!(!err.is_unreachable(), "{err}");
    }

    #[test]
    fn unusable_validator_is_dropped_not_fatal() {
        let server = Server::start();
        server.route("/x", vec![Reply::ok("1.1.1.0/24")]);
        let validators = Validators {
            etag: Some("bad\nvalue".into()),
            last_modified: None,
        };
        fetcher().get(&server.url("/x"), &validators).unwrap();
        assert_eq!(server.requests()[0].header("if-none-match"), None);
    }

    #[test]
    fn follows_a_chain_of_three_redirects() {
        let server = Server::start();
        server.route("/a", vec![Reply::redirect(301, &server.url("/b"))]);
        server.route("/b", vec![Reply::redirect(302, "/c")]); // relative Location
        server.route("/c", vec![Reply::redirect(307, "d")]); // relative to /c's directory
        server.route("/d", vec![Reply::ok(V4).header("ETag", "\"e\"")]);
        let (body, etag, _, url) = body_of(fetcher().get(&server.url("/a"), &none()).unwrap());
        assert_eq!(body, V4);
        assert_eq!(etag.as_deref(), Some("\"e\""));
        assert_eq!(url, server.url("/d"));
        for p in ["/a", "/b", "/c", "/d"] {
            assert_eq!(server.hits(p), 1, "{p}");
        }
        // Every hop carries the User-Agent.
        assert!(server
            .requests()
            .iter()
            .all(|r| r.header("user-agent") == Some(USER_AGENT)));
    }

    #[test]
    fn five_redirects_are_followed_six_are_refused() {
        let server = Server::start();
        for i in 0..6 {
            server.route(
                &format!("/r{i}"),
                vec![Reply::redirect(301, &format!("/r{}", i + 1))],
            );
        }
        server.route("/r6", vec![Reply::ok("1.1.1.0/24")]);
        // /r1 -> ... -> /r6: five redirects.
        let (_, _, _, url) = body_of(fetcher().get(&server.url("/r1"), &none()).unwrap());
        assert_eq!(url, server.url("/r6"));
        // /r0 -> ... -> /r6: six.
        let err = fetcher().get(&server.url("/r0"), &none()).unwrap_err();
        assert!(!err.is_unreachable(), "{err}");
        assert!(err.reason().contains("more than 5 redirects"), "{err}");
        assert_eq!(server.hits("/r0"), 1, "never retried");
        assert_eq!(server.hits("/r6"), 1, "the sixth target is never fetched");
    }

    #[test]
    fn redirect_to_plain_http_remote_host_is_refused_without_contact() {
        let server = Server::start();
        // `.invalid` never resolves (RFC 6761): contacting it would be Unreachable, not Refused.
        let target = "http://cf-allowlist-test.invalid/ips-v4";
        server.route("/a", vec![Reply::redirect(301, target)]);
        let err = fetcher().get(&server.url("/a"), &none()).unwrap_err();
        assert!(!err.is_unreachable(), "{err}");
        assert_eq!(err.url(), server.url("/a"));
        assert!(
            err.to_string()
                .contains(&format!("redirect to {target} refused")),
            "{err}"
        );
        assert_eq!(server.hits("/a"), 1, "never retried");
    }

    #[test]
    fn redirect_to_another_scheme_is_refused() {
        let server = Server::start();
        server.route("/a", vec![Reply::redirect(302, "ftp://127.0.0.1/ips-v4")]);
        let err = fetcher().get(&server.url("/a"), &none()).unwrap_err();
        assert!(!err.is_unreachable(), "{err}");
        assert!(err.reason().contains("redirect to ftp://"), "{err}");
    }

    #[test]
    fn redirect_policy() {
        assert!(check_redirect("https://a.example/x", "https://b.example/y").is_ok());
        assert!(check_redirect("http://127.0.0.1:1/x", "http://localhost:2/y").is_ok());
        assert!(check_redirect("http://127.0.0.1:1/x", "https://b.example/y").is_ok());
        // A downgrade is refused even to a loopback host.
        let why = check_redirect("https://a.example/x", "http://127.0.0.1/y").unwrap_err();
        assert!(why.contains("https to plain http"), "{why}");
        assert!(check_redirect("https://a.example/x", "http://b.example/y").is_err());
    }

    #[test]
    fn location_resolution() {
        let base = "https://www.example.com/dir/page?q=1";
        let cases = [
            ("https://other.example/p", "https://other.example/p"),
            ("//cdn.example/p", "https://cdn.example/p"),
            ("/ips-v4", "https://www.example.com/ips-v4"),
            ("ips-v6", "https://www.example.com/dir/ips-v6"),
            ("?q=2", "https://www.example.com/dir/page?q=2"),
            ("/x#frag", "https://www.example.com/x"),
        ];
        for (loc, want) in cases {
            assert_eq!(resolve_location(base, loc).unwrap(), want, "{loc}");
        }
        assert!(resolve_location(base, "").is_err());
    }

    #[test]
    fn server_error_then_success_is_retried() {
        let server = Server::start();
        server.route("/x", vec![Reply::status(500), Reply::ok("1.1.1.0/24")]);
        let (body, ..) = body_of(fetcher().get(&server.url("/x"), &none()).unwrap());
        assert_eq!(body, "1.1.1.0/24");
        assert_eq!(server.hits("/x"), 2);
    }

    #[test]
    fn persistent_503_is_unreachable_after_all_attempts() {
        let server = Server::start();
        server.route("/x", vec![Reply::status(503)]);
        let err = fetcher().get(&server.url("/x"), &none()).unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert_eq!(server.hits("/x"), 4, "retries + 1");
        assert_eq!(
            err.reason(),
            "HTTP 503 Service Unavailable after 4 attempts"
        );
        assert_eq!(err.url(), server.url("/x"));
    }

    #[test]
    fn too_many_requests_is_retried() {
        let server = Server::start();
        server.route("/x", vec![Reply::status(429), Reply::ok("1.1.1.0/24")]);
        fetcher().get(&server.url("/x"), &none()).unwrap();
        assert_eq!(server.hits("/x"), 2);
    }

    #[test]
    fn not_found_is_refused_without_retry() {
        let server = Server::start();
        let err = fetcher().get(&server.url("/missing"), &none()).unwrap_err();
        assert!(!err.is_unreachable(), "{err}");
        assert_eq!(err.reason(), "HTTP 404 Not Found");
        assert_eq!(server.hits("/missing"), 1);
    }

    #[test]
    fn slow_server_times_out_as_unreachable() {
        let server = Server::start();
        server.route(
            "/slow",
            vec![Reply::ok("1.1.1.0/24").delay(Duration::from_millis(1500))],
        );
        let config = HttpConfig {
            timeout: Duration::from_millis(200),
            retries: 1,
            ..fast()
        };
        let started = Instant::now();
        let err = Fetcher::new(config)
            .get(&server.url("/slow"), &none())
            .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert!(err.reason().contains("timed out"), "{err}");
        assert!(err.reason().ends_with("after 2 attempts"), "{err}");
        assert!(started.elapsed() < Duration::from_millis(1200), "{err}");
        assert_eq!(server.hits("/slow"), 2);
    }

    /// An HTTPS server on loopback (`openssl s_server -www`) whose certificate is signed by a
    /// private CA made for the test; killed when dropped.
    struct TlsServer {
        child: std::process::Child,
        port: u16,
        ca: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    impl TlsServer {
        fn start() -> TlsServer {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let openssl = |args: &[&str]| {
                let out = std::process::Command::new("openssl")
                    .args(args)
                    .current_dir(d)
                    .output()
                    .expect("openssl is installed (scripts/test.sh installs it)");
                assert!(out.status.success(), "openssl {args:?}: {out:?}");
            };
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=cf-allowlist test CA",
            ]);
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=127.0.0.1",
            ]);
            std::fs::write(d.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
            openssl(&[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "2",
                "-extfile",
                "ext",
            ]);
            let port = {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let child = std::process::Command::new("openssl")
                .args([
                    "s_server", "-quiet", "-www", "-cert", "leaf.pem", "-key", "leaf.key",
                ])
                .args(["-accept", &format!("127.0.0.1:{port}")])
                .current_dir(d)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "s_server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            TlsServer {
                child,
                port,
                ca: d.join("ca.pem"),
                _dir: dir,
            }
        }
    }

    impl Drop for TlsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn a_mirror_behind_a_private_ca_needs_fetch_ca_file() {
        let server = TlsServer::start();
        let url = format!("https://127.0.0.1:{}/ips-v4", server.port);
        let e = Fetcher::new(fast()).get(&url, &none()).unwrap_err();
        assert!(e.reason().contains("UnknownIssuer"), "{e}");
        let trusting = Fetcher::new(HttpConfig {
            roots: Some(load_ca_file(&server.ca).unwrap()),
            ..fast()
        });
        match trusting.get(&url, &none()).unwrap() {
            Response::Body { body, .. } => assert!(body.contains("s_server"), "{body}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unusable_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem");
        assert!(load_ca_file(&missing).unwrap_err().contains("cannot read"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(load_ca_file(&empty)
            .unwrap_err()
            .contains("no PEM certificate"));
    }

    #[test]
    fn closed_port_is_unreachable() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        }; // dropped: nothing listens there now
        let url = format!("http://127.0.0.1:{port}/ips-v4");
        let err = fetcher().get(&url, &none()).unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert_eq!(err.reason(), "connection refused after 4 attempts");
        assert!(err.to_string().contains(&url), "{err}");
    }

    #[test]
    fn unreachable_redirect_target_retries_the_chain_and_names_the_hop() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = format!("http://127.0.0.1:{port}/ips-v4");
        let server = Server::start();
        server.route("/a", vec![Reply::redirect(301, &target)]);
        let err = Fetcher::new(HttpConfig {
            retries: 1,
            ..fast()
        })
        .get(&server.url("/a"), &none())
        .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert_eq!(err.url(), server.url("/a"));
        assert_eq!(
            err.reason(),
            format!("at {target}: connection refused after 2 attempts")
        );
        assert_eq!(
            server.hits("/a"),
            2,
            "each attempt starts from the URL asked for"
        );
    }

    #[test]
    fn truncated_body_is_an_error() {
        let server = Server::start();
        server.route("/x", vec![Reply::ok(V4).truncate(10)]);
        let err = Fetcher::new(HttpConfig {
            retries: 0,
            ..fast()
        })
        .get(&server.url("/x"), &none())
        .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert!(
            err.reason().starts_with(&format!(
                "body truncated: the connection closed after 10 of {}",
                V4.len()
            )),
            "{err}"
        );
    }

    #[test]
    fn truncated_chunked_body_is_an_error() {
        let server = Server::start();
        server.route("/x", vec![Reply::ok(V4).chunked().truncate(10)]);
        let err = Fetcher::new(HttpConfig {
            retries: 0,
            ..fast()
        })
        .get(&server.url("/x"), &none())
        .unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert!(err.reason().contains("truncated"), "{err}");
    }

    #[test]
    fn chunked_body_is_read_whole() {
        let server = Server::start();
        let big = "103.21.244.0/22\n".repeat(5000); // 80 KB: several chunks
        server.route("/x", vec![Reply::ok(big.clone()).chunked()]);
        let (body, ..) = body_of(fetcher().get(&server.url("/x"), &none()).unwrap());
        assert_eq!(body, big);
    }

    #[test]
    fn body_over_the_cap_is_refused() {
        let server = Server::start();
        let two_mib = vec![b'a'; 2 * 1024 * 1024];
        server.route("/len", vec![Reply::ok(two_mib.clone())]);
        server.route("/chunked", vec![Reply::ok(two_mib).chunked()]);
        for path in ["/len", "/chunked"] {
            let err = fetcher().get(&server.url(path), &none()).unwrap_err();
            assert!(!err.is_unreachable(), "{path}: {err}");
            assert_eq!(err.reason(), "body exceeds 1048576 bytes", "{path}");
            assert_eq!(server.hits(path), 1, "{path}: never retried");
        }
    }

    #[test]
    fn body_exactly_at_the_cap_is_accepted() {
        let server = Server::start();
        server.route("/x", vec![Reply::ok(vec![b'a'; 1000]).chunked()]);
        let config = HttpConfig {
            max_bytes: 1000,
            ..fast()
        };
        let (body, ..) = body_of(
            Fetcher::new(config)
                .get(&server.url("/x"), &none())
                .unwrap(),
        );
        assert_eq!(body.len(), 1000);
    }

    #[test]
    fn non_utf8_body_is_refused() {
        let server = Server::start();
        server.route("/x", vec![Reply::ok(vec![b'1', b'.', 0xff, 0xfe])]);
        let err = fetcher().get(&server.url("/x"), &none()).unwrap_err();
        assert!(!err.is_unreachable(), "{err}");
        assert!(err.reason().contains("not valid UTF-8"), "{err}");
        assert_eq!(server.hits("/x"), 1);
    }

    #[test]
    fn plain_http_to_a_remote_host_is_refused_before_any_request() {
        let err = fetcher()
            .get("http://cf-allowlist-test.invalid/ips-v4", &none())
            .unwrap_err();
        assert!(!err.is_unreachable(), "{err}");
    }

    #[test]
    fn check_url_cases() {
        for ok in [
            "https://api.cloudflare.com/client/v4/ips",
            "https://www.cloudflare.com/ips-v4",
            "http://127.0.0.1:8080/ips-v4",
            "http://127.1.2.3/x",
            "http://[::1]:8080/ips-v6",
            "http://localhost/ips-v4",
            "HTTP://LOCALHOST:1/x",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}: {:?}", check_url(ok));
        }
        for bad in [
            "http://example.com/ips-v4",
            "http://128.0.0.1/x",
            "http://[::2]/x",
            "http://localhost.example.com/x",
            "ftp://www.cloudflare.com/ips-v4",
            "file:///etc/passwd",
            "/ips-v4",
            "https://",
            "not a url",
            "",
        ] {
            let err = check_url(bad).unwrap_err();
            assert!(!err.is_unreachable(), "{bad}");
            assert_eq!(err.url(), bad);
        }
        let err = check_url("http://example.com/ips-v4").unwrap_err();
        assert!(err.reason().contains("loopback"), "{err}");
        let err = check_url("ftp://example.com/").unwrap_err();
        assert!(err.reason().contains("https is required"), "{err}");
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let f = Fetcher::new(HttpConfig {
            backoff: Duration::from_millis(100),
            ..fast()
        });
        for _ in 0..50 {
            assert!(f.backoff(1) <= Duration::from_millis(100));
            assert!(f.backoff(3) <= Duration::from_millis(400));
            assert!(f.backoff(60) <= MAX_BACKOFF);
        }
    }

    #[test]
    fn defaults() {
        let c = HttpConfig::default();
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.retries, 3);
        assert_eq!(c.max_bytes, 1 << 20);
        assert_eq!(c.backoff, Duration::from_millis(500));
    }
}
