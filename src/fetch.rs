//! Placeholder until the HTTP layer lands (same API).
#![allow(missing_docs, dead_code)]
use std::time::Duration;
pub const USER_AGENT: &str = concat!("cf-allowlist/", env!("CARGO_PKG_VERSION"));
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retries: u32,
    pub max_bytes: u64,
    pub backoff: Duration,
}
impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retries: 3,
            max_bytes: 1 << 20,
            backoff: Duration::from_millis(500),
        }
    }
}
#[derive(Default, Clone, Debug)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}
pub enum Response {
    Body {
        body: String,
        etag: Option<String>,
        last_modified: Option<String>,
        url: String,
    },
    NotModified,
}
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: {reason}")]
    Refused { url: String, reason: String },
}
impl FetchError {
    pub fn url(&self) -> &str {
        match self {
            FetchError::Unreachable { url, .. } | FetchError::Refused { url, .. } => url,
        }
    }
    pub fn is_unreachable(&self) -> bool {
        matches!(self, FetchError::Unreachable { .. })
    }
}
pub fn check_url(url: &str) -> Result<(), FetchError> {
    if url.starts_with("https://")
        || url.starts_with("http://127.0.0.1")
        || url.starts_with("http://localhost")
        || url.starts_with("http://[::1]")
    {
        Ok(())
    } else {
        Err(FetchError::Refused {
            url: url.into(),
            reason: "plain http is only allowed to loopback".into(),
        })
    }
}
pub struct Fetcher {
    config: HttpConfig,
}
impl Fetcher {
    pub fn new(config: HttpConfig) -> Self {
        Fetcher { config }
    }
    pub fn get(&self, url: &str, _v: &Validators) -> Result<Response, FetchError> {
        Err(FetchError::Unreachable {
            url: url.into(),
            reason: format!("not built {:?}", self.config.timeout),
        })
    }
}
