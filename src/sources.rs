//! Sources of ranges: fetching, strict parsing and validation, and the fallbacks (cache, embedded
//! snapshot) when a source cannot be reached.
//!
//! A bad answer (HTML, `success: false`, a refused range, too few entries) fails the run; only an
//! unreachable source falls back, and a fallback makes the run add-only.

use cfa_core::cidr::special_purpose;
use cfa_core::{parse_cidr, AllowList, Family};
use serde::Serialize;
use serde_json::Value;

use crate::config::{Config, Source};
use crate::fetch::{FetchError, Fetcher, Response, Validators};
use crate::state::{human_age, CachedList, State};
use cfa_core::snapshot;

/// A source answered with a list that failed validation (exit 1, firewall untouched).
#[derive(Debug, thiserror::Error)]
#[error("source {source_id}: {reason}")]
pub struct SourceError {
    /// The source.
    pub source_id: String,
    /// What was wrong, naming the URL or file.
    pub reason: String,
}

/// Where a source's list came from this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum Served {
    /// Fetched now.
    Network {
        /// The URL that answered.
        url: String,
    },
    /// The server said 304: the cached list is current.
    NotModified {
        /// The URL asked.
        url: String,
    },
    /// The source could not be reached: the last good list.
    Cache {
        /// Its age in seconds.
        age_seconds: u64,
        /// Why the source was not used.
        reason: String,
    },
    /// Neither the source nor the cache: the list compiled into this binary.
    Embedded {
        /// When the snapshot was taken.
        date: String,
        /// Why the source was not used.
        reason: String,
    },
    /// Unreachable with nothing to fall back on: contributes nothing this run.
    Nothing {
        /// Why.
        reason: String,
    },
    /// An operator's file or inline list.
    Local,
}

impl Served {
    /// `network`, `not_modified`, `cache`, `embedded`, `nothing`, `local`.
    pub fn kind(&self) -> &'static str {
        match self {
            Served::Network { .. } => "network",
            Served::NotModified { .. } => "not_modified",
            Served::Cache { .. } => "cache",
            Served::Embedded { .. } => "embedded",
            Served::Nothing { .. } => "nothing",
            Served::Local => "local",
        }
    }

    /// Whether the list is a fallback (the plan must then be add-only).
    pub fn degraded(&self) -> bool {
        matches!(
            self,
            Served::Cache { .. } | Served::Embedded { .. } | Served::Nothing { .. }
        )
    }
}

/// One source's contribution to the desired list.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// The source id (`cloudflare`, `url:...`).
    pub id: String,
    /// Where the list came from.
    #[serde(flatten)]
    pub served: Served,
    /// Number of ranges it gave.
    pub entries: usize,
    /// The ranges.
    #[serde(skip)]
    pub list: AllowList,
    /// A new cache entry to store once the run succeeds.
    #[serde(skip)]
    pub cache_update: Option<CachedList>,
    /// Things worth a warning even though the source served (its API failed, the text lists served).
    #[serde(skip)]
    pub notes: Vec<String>,
}

impl Resolved {
    /// The warning an operator should see for a fallback, if any.
    pub fn warning(&self) -> Option<String> {
        match &self.served {
            Served::Cache { age_seconds, reason } => Some(format!(
                "source {} unreachable ({reason}); using the cached list from {} ago, add-only",
                self.id,
                human_age(*age_seconds)
            )),
            Served::Embedded { date, reason } => Some(format!(
                "source {} unreachable ({reason}) and no cached list; using the embedded snapshot of {date}, add-only",
                self.id
            )),
            Served::Nothing { reason } => Some(format!(
                "source {} unreachable ({reason}) and no cached list; it contributes nothing, add-only",
                self.id
            )),
            _ => None,
        }
    }
}

/// Resolves every configured source.
pub struct Resolver<'a> {
    config: &'a Config,
    fetcher: &'a Fetcher,
    state: &'a State,
    offline: bool,
    now: u64,
}

impl<'a> Resolver<'a> {
    /// A resolver; `offline` uses only the cache and the snapshot.
    pub fn new(
        config: &'a Config,
        fetcher: &'a Fetcher,
        state: &'a State,
        offline: bool,
        now: u64,
    ) -> Self {
        Resolver {
            config,
            fetcher,
            state,
            offline,
            now,
        }
    }

    /// All sources, in configuration order. The first invalid one fails the whole run.
    pub fn resolve(&self) -> Result<Vec<Resolved>, SourceError> {
        self.config
            .sources
            .iter()
            .map(|s| self.resolve_one(s))
            .collect()
    }

    fn families(&self) -> Vec<Family> {
        self.config.rule_spec().families
    }

    fn resolve_one(&self, source: &Source) -> Result<Resolved, SourceError> {
        let id = source.id();
        let err = |reason: String| SourceError {
            source_id: id.clone(),
            reason,
        };
        let families = self.families();
        let resolved =
            |served: Served, list: AllowList, cache_update: Option<CachedList>| Resolved {
                id: id.clone(),
                entries: list.len(),
                served,
                list,
                cache_update,
                notes: Vec::new(),
            };
        match source {
            Source::Cidrs(items) => {
                let list = items
                    .iter()
                    .map(|c| parse_cidr(c.trim()).map_err(|e| err(e.to_string())))
                    .collect::<Result<AllowList, _>>()?;
                Ok(resolved(Served::Local, list.only(&families), None))
            }
            Source::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
                let list = parse_plain(&text, false)
                    .map_err(|e| err(format!("{}: {e}", path.display())))?;
                Ok(resolved(Served::Local, list.only(&families), None))
            }
            Source::Url(_) | Source::Cloudflare { .. } => {
                let reason = if self.offline {
                    "offline run".to_string()
                } else {
                    match self.fetch_remote(source, &id) {
                        Ok((served, list, cache_update, notes)) => {
                            let mut r = resolved(served, list, cache_update);
                            r.notes = notes;
                            return Ok(r);
                        }
                        Err(RemoteError::Invalid(reason)) => return Err(err(reason)),
                        Err(RemoteError::Unreachable(reason)) => reason,
                    }
                };
                Ok(self.fallback(source, &id, reason))
            }
        }
    }

    /// The last good list, else (Cloudflare) the embedded snapshot, else nothing.
    fn fallback(&self, source: &Source, id: &str, reason: String) -> Resolved {
        let families = self.families();
        // The cache is a file on disk: it is validated exactly as a fresh remote answer, and a
        // list that fails is not used (the next fallback serves, add-only).
        let mut notes = Vec::new();
        let cached = self.state.sources.get(id).and_then(|c| {
            match c.list().and_then(|l| self.validate_remote(l)) {
                Ok(list) => Some((c.fetched_at, list)),
                Err(e) => {
                    notes.push(format!(
                        "source {id}: ignoring the cached list in the state file: {e}"
                    ));
                    None
                }
            }
        });
        let (served, list) = match (cached, source) {
            (Some((at, list)), _) => (
                Served::Cache {
                    age_seconds: self.now.saturating_sub(at),
                    reason,
                },
                list,
            ),
            (None, Source::Cloudflare { .. }) => (
                Served::Embedded {
                    date: snapshot::SNAPSHOT_DATE.to_string(),
                    reason,
                },
                snapshot::cloudflare(),
            ),
            (None, _) => (Served::Nothing { reason }, AllowList::new()),
        };
        let list = list.only(&families);
        Resolved {
            id: id.to_string(),
            entries: list.len(),
            served,
            list,
            cache_update: None,
            notes,
        }
    }

    fn validators(&self, id: &str, url: &str) -> Validators {
        match self.state.sources.get(id) {
            Some(c) if c.url == url => Validators {
                etag: c.etag.clone(),
                last_modified: c.last_modified.clone(),
            },
            _ => Validators::default(),
        }
    }

    /// The cached list a 304 confirms, validated exactly as a 200 with that body would be
    /// (families, special ranges, widest prefix, min_entries).
    fn cached_list(&self, id: &str, url: &str) -> Result<AllowList, RemoteError> {
        let cached = self.state.sources.get(id).ok_or_else(|| {
            RemoteError::Invalid(format!(
                "{url} answered 304 Not Modified but no cached list exists"
            ))
        })?;
        cached
            .list()
            .and_then(|list| self.validate_remote(list))
            .map_err(|e| {
                RemoteError::Invalid(format!(
                    "{url} answered 304 Not Modified, but the cached list it confirms is unusable: {e}"
                ))
            })
    }

    fn fetch_remote(&self, source: &Source, id: &str) -> Result<Fetched, RemoteError> {
        match source {
            Source::Cloudflare { api_url, text_urls } => {
                match self.fetch_list(id, api_url, parse_api) {
                    Ok(done) => Ok(done),
                    Err(api_failure) if text_urls.is_empty() => Err(api_failure),
                    Err(api_failure) => {
                        tracing::info!(source = %id, reason = %api_failure.reason(), "API failed; trying the text lists");
                        match self.fetch_text(text_urls) {
                            Ok((served, list, update, mut notes)) => {
                                notes.push(format!(
                                    "{api_url} failed ({}); served by the text lists",
                                    api_failure.reason()
                                ));
                                Ok((served, list, update, notes))
                            }
                            Err(text_failure) => Err(api_failure.combine(text_failure)),
                        }
                    }
                }
            }
            Source::Url(url) => {
                self.fetch_list(id, url, |body| Ok((parse_plain(body, true)?, None)))
            }
            Source::File(_) | Source::Cidrs(_) => unreachable!("local sources are not fetched"),
        }
    }

    /// One conditional GET of a list: 304 serves the cached list, 200 is parsed with `parse`
    /// (which returns the list and its own etag, if any) and validated.
    fn fetch_list(
        &self,
        id: &str,
        url: &str,
        parse: impl Fn(&str) -> Result<(AllowList, Option<String>), String>,
    ) -> Result<Fetched, RemoteError> {
        match self
            .fetcher
            .get(url, &self.validators(id, url))
            .map_err(RemoteError::from)?
        {
            Response::NotModified => Ok((
                Served::NotModified {
                    url: url.to_string(),
                },
                self.cached_list(id, url)?,
                None,
                vec![],
            )),
            Response::Body {
                body,
                etag,
                last_modified,
                url: final_url,
            } => {
                let (list, list_etag) = parse(&body)
                    .and_then(|(list, list_etag)| Ok((self.validate_remote(list)?, list_etag)))
                    .map_err(|e| RemoteError::Invalid(format!("{final_url}: {e}")))?;
                let update = self.cache_entry(url, etag, last_modified, list_etag, &list);
                Ok((
                    Served::Network { url: final_url },
                    list,
                    Some(update),
                    vec![],
                ))
            }
        }
    }

    /// Every text list, each asked even when another failed: a bad answer from any of them fails
    /// the source (it is never mistaken for an outage); only if none answered badly and one could
    /// not be reached does the source count as unreachable.
    fn fetch_text(&self, urls: &[String]) -> Result<Fetched, RemoteError> {
        let mut all = AllowList::new();
        let mut failure: Option<RemoteError> = None;
        for url in urls {
            let got = match self
                .fetcher
                .get(url, &Validators::default())
                .map_err(RemoteError::from)
            {
                Ok(Response::NotModified) => Err(RemoteError::Invalid(format!(
                    "{url} answered 304 to an unconditional request"
                ))),
                Ok(Response::Body {
                    body,
                    url: final_url,
                    ..
                }) => parse_plain(&body, true)
                    .map_err(|e| RemoteError::Invalid(format!("{final_url}: {e}"))),
                Err(e) => Err(e),
            };
            match got {
                Ok(list) => all = all.union(&list),
                Err(e) => {
                    failure = Some(match failure {
                        None => e,
                        Some(earlier) => earlier.combine(e),
                    })
                }
            }
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        let list = self
            .validate_remote(all)
            .map_err(|e| RemoteError::Invalid(format!("{}: {e}", urls.join(" + "))))?;
        let update = self.cache_entry(&urls.join(" "), None, None, None, &list);
        Ok((
            Served::Network {
                url: urls.join(" "),
            },
            list,
            Some(update),
            vec![],
        ))
    }

    fn cache_entry(
        &self,
        url: &str,
        etag: Option<String>,
        last_modified: Option<String>,
        list_etag: Option<String>,
        list: &AllowList,
    ) -> CachedList {
        CachedList {
            fetched_at: self.now,
            url: url.to_string(),
            etag,
            last_modified,
            list_etag,
            cidrs: list.iter().map(|n| n.to_string()).collect(),
        }
    }

    /// What every list from outside this host goes through, a fresh answer, a 304's cached list
    /// or the cache serving for an outage alike: the managed families kept, then no
    /// special-purpose or non-global range, nothing wider than `guards.widest_prefix`, and at
    /// least `guards.min_entries` per family.
    fn validate_remote(&self, list: AllowList) -> Result<AllowList, String> {
        let families = self.families();
        let list = list.only(&families);
        for net in list.iter() {
            refuse_special(&net)?;
            let widest = self.config.guards.widest_prefix.of(Family::of(&net));
            if net.prefix_len() < widest {
                return Err(format!(
                    "{net} is wider than guards.widest_prefix.{} = /{widest}; refusing the list",
                    Family::of(&net)
                ));
            }
        }
        for family in families {
            let min = self.config.guards.min_entries.of(family);
            let got = list.len_of(family);
            if got < min {
                return Err(format!(
                    "only {got} {family} ranges, fewer than guards.min_entries.{family} = {min}; refusing the list"
                ));
            }
        }
        Ok(list)
    }
}

type Fetched = (Served, AllowList, Option<CachedList>, Vec<String>);

/// How fetching a remote source failed.
#[derive(Debug)]
enum RemoteError {
    /// A bad answer: the run fails.
    Invalid(String),
    /// No answer: fall back.
    Unreachable(String),
}

impl RemoteError {
    fn reason(&self) -> &str {
        match self {
            RemoteError::Invalid(r) | RemoteError::Unreachable(r) => r,
        }
    }

    /// A bad answer from either URL wins: it is never mistaken for an outage.
    fn combine(self, other: RemoteError) -> RemoteError {
        let reason = format!("{}; {}", self.reason(), other.reason());
        match (self, other) {
            (RemoteError::Unreachable(_), RemoteError::Unreachable(_)) => {
                RemoteError::Unreachable(reason)
            }
            _ => RemoteError::Invalid(reason),
        }
    }
}

impl From<FetchError> for RemoteError {
    fn from(e: FetchError) -> Self {
        if e.is_unreachable() {
            RemoteError::Unreachable(e.to_string())
        } else {
            RemoteError::Invalid(e.to_string())
        }
    }
}

/// Rejects bodies that are obviously not a list before looking at lines.
fn check_body(text: &str) -> Result<&str, String> {
    let body = text.trim_start_matches('\u{feff}').trim();
    if body.is_empty() {
        return Err("empty answer; refusing to treat it as an empty list".into());
    }
    if body.starts_with('<') {
        return Err("answered with an HTML page, not a list".into());
    }
    Ok(body)
}

/// Parses a plain list: one CIDR a line, `#` comments, blank lines, CRLF, no final newline.
/// `remote`: special-purpose ranges are refused (an operator's own file may list them).
pub fn parse_plain(text: &str, remote: bool) -> Result<AllowList, String> {
    let body = check_body(text)?;
    let mut list = AllowList::new();
    for (n, raw) in body.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let net = parse_cidr(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if remote {
            refuse_special(&net).map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        list.insert(net);
    }
    if list.is_empty() {
        return Err("the list has no entries; refusing to treat it as an empty list".into());
    }
    Ok(list)
}

/// Refuses what a remote list must never hold: special-purpose ranges, and IPv6 outside global
/// unicast (`2000::/3`: `::1.2.3.4/128` is inside the reserved `::/8`).
fn refuse_special(net: &ipnet::IpNet) -> Result<(), String> {
    if let Some(special) = special_purpose(net) {
        return Err(format!(
            "{net} overlaps the special-purpose range {special}; refused from a remote source"
        ));
    }
    if let ipnet::IpNet::V6(v6) = net {
        let global: ipnet::Ipv6Net = "2000::/3".parse().expect("static network");
        if !global.contains(v6) {
            return Err(format!(
                "{net} is not global unicast IPv6 (outside 2000::/3); refused from a remote source"
            ));
        }
    }
    Ok(())
}

/// Parses Cloudflare's API answer: `{"success": true, "result": {"ipv4_cidrs": [..], "ipv6_cidrs": [..], "etag": ".."}}`.
/// Returns the list and the list's own etag.
pub fn parse_api(text: &str) -> Result<(AllowList, Option<String>), String> {
    let body = check_body(text)?;
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("success") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let errors = v
                .get("errors")
                .map(Value::to_string)
                .unwrap_or_else(|| "[]".into());
            return Err(format!("API answered success: false (errors: {errors})"));
        }
        _ => return Err("API answer has no \"success\": true".into()),
    }
    let result = v.get("result").ok_or("API answer has no \"result\"")?;
    let mut list = AllowList::new();
    for key in ["ipv4_cidrs", "ipv6_cidrs"] {
        let items = result
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("API answer has no result.{key} list"))?;
        for item in items {
            let s = item
                .as_str()
                .ok_or_else(|| format!("result.{key}: {item} is not a string"))?;
            let net = parse_cidr(s.trim()).map_err(|e| format!("result.{key}: {e}"))?;
            let expected = if key == "ipv4_cidrs" {
                Family::V4
            } else {
                Family::V6
            };
            if Family::of(&net) != expected {
                return Err(format!("result.{key}: {net} is not {expected}"));
            }
            refuse_special(&net).map_err(|e| format!("result.{key}: {e}"))?;
            list.insert(net);
        }
    }
    if list.is_empty() {
        return Err("the API answer lists no ranges; refusing to treat it as an empty list".into());
    }
    let etag = result.get("etag").and_then(Value::as_str).map(String::from);
    Ok((list, etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const API: &str = include_str!("../tests/fixtures/cloudflare/api-client-v4-ips.json");
    const V4: &str = include_str!("../tests/fixtures/cloudflare/ips-v4");
    const V6: &str = include_str!("../tests/fixtures/cloudflare/ips-v6");

    #[test]
    fn api_answer_parses_to_the_22_ranges() {
        let (list, etag) = parse_api(API).unwrap();
        assert_eq!((list.v4.len(), list.v6.len()), (15, 7));
        assert_eq!(etag.as_deref(), Some("38f79d050aa027e3be3865e495dcc9bc"));
        let text = parse_plain(V4, true)
            .unwrap()
            .union(&parse_plain(V6, true).unwrap());
        assert_eq!(list, text, "the API and the text lists agree");
    }

    #[test]
    fn plain_lists_tolerate_crlf_comments_blanks_and_no_final_newline() {
        let l = parse_plain(
            "# Cloudflare\r\n173.245.48.0/20\r\n\r\n103.21.244.0/22 # edge\r\n2400:cb00::/32",
            true,
        )
        .unwrap();
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn bad_bodies_are_errors_never_empty_lists() {
        assert!(parse_plain("", true).unwrap_err().contains("empty"));
        assert!(parse_plain("\n\n  \n", true).unwrap_err().contains("empty"));
        assert!(parse_plain("# nothing\n", true)
            .unwrap_err()
            .contains("no entries"));
        assert!(parse_plain("<!DOCTYPE html><html>blocked</html>", true)
            .unwrap_err()
            .contains("HTML"));
        assert!(parse_api("<html>").unwrap_err().contains("HTML"));
        assert!(parse_api("").unwrap_err().contains("empty"));
        let e = parse_api(r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"result":null}"#).unwrap_err();
        assert!(
            e.contains("success: false") && e.contains("Authentication error"),
            "{e}"
        );
        assert!(parse_api(r#"{"result":{"ipv4_cidrs":[],"ipv6_cidrs":[]}}"#).is_err());
        assert!(
            parse_api(r#"{"success":true,"result":{"ipv4_cidrs":["1.1.1.0/24"]}}"#)
                .unwrap_err()
                .contains("ipv6_cidrs")
        );
        assert!(parse_api(
            r#"{"success":true,"result":{"ipv4_cidrs":["2400:cb00::/32"],"ipv6_cidrs":[]}}"#
        )
        .is_err());
    }

    #[test]
    fn strictness_names_the_line() {
        assert!(parse_plain("173.245.48.0/20\n010.1.2.0/24\n", true)
            .unwrap_err()
            .starts_with("line 2"));
        assert!(parse_plain("104.16.0.1/13\n", true)
            .unwrap_err()
            .contains("host bits"));
        assert!(parse_plain("104.16.0.0/13 104.24.0.0/14\n", true).is_err());
    }

    #[test]
    fn special_ranges_refused_remotely_allowed_locally() {
        for bad in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/8",
            "127.0.0.1/32",
            "fe80::/10",
            "224.0.0.0/4",
            "192.0.2.0/24",
        ] {
            let e = parse_plain(bad, true).unwrap_err();
            assert!(e.contains("special-purpose"), "{bad}: {e}");
        }
        assert_eq!(parse_plain("10.0.0.0/8\n", false).unwrap().len(), 1);
        let api = r#"{"success":true,"result":{"ipv4_cidrs":["0.0.0.0/0"],"ipv6_cidrs":[]}}"#;
        assert!(parse_api(api).unwrap_err().contains("special-purpose"));
    }

    mod resolver {
        use super::*;
        use crate::config::Config;
        use crate::fetch::HttpConfig;
        use crate::state::CachedList;
        use std::time::Duration;
        use testkit::http::{Reply, Server};

        fn fetcher() -> Fetcher {
            Fetcher::new(HttpConfig {
                timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(1),
                retries: 0,
                backoff: Duration::from_millis(1),
                ..HttpConfig::default()
            })
        }

        fn config(yaml: &str) -> Config {
            Config::parse(yaml, "test.yaml").unwrap()
        }

        fn cloudflare(server: &Server, families: &str) -> Config {
            config(&format!(
                "families: {families}\nsources:\n  - cloudflare: {{ api_url: \"{}\", text_urls: [\"{}\", \"{}\"] }}\n",
                server.url("/api"),
                server.url("/v4"),
                server.url("/v6")
            ))
        }

        fn cached(url: &str, cidrs: &[&str]) -> State {
            let mut state = State::default();
            let id = format!("cloudflare:{url}");
            state.sources.insert(
                id,
                CachedList {
                    fetched_at: 1,
                    url: url.to_string(),
                    etag: Some("\"v1\"".into()),
                    last_modified: None,
                    list_etag: None,
                    cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
                },
            );
            state
        }

        fn resolve(config: &Config, state: &State) -> Result<Vec<Resolved>, SourceError> {
            Resolver::new(config, &fetcher(), state, false, 1000).resolve()
        }

        const V4: &[&str] = &["173.245.48.0/20", "103.21.244.0/22", "103.22.200.0/22"];

        #[test]
        fn a_304_is_filtered_by_family_like_a_200() {
            let server = Server::start();
            server.route("/api", vec![Reply::status(304)]);
            let mut cidrs = V4.to_vec();
            cidrs.push("2400:cb00::/32");
            let state = cached(&server.url("/api"), &cidrs);
            let r = resolve(&cloudflare(&server, "[ipv4]"), &state).unwrap();
            assert_eq!(r[0].served.kind(), "not_modified");
            assert_eq!(r[0].list.len_of(Family::V6), 0, "IPv6 must be filtered");
            assert_eq!(r[0].list.len_of(Family::V4), 3);
        }

        #[test]
        fn a_304_confirming_a_short_or_tampered_cache_fails() {
            let server = Server::start();
            server.route("/api", vec![Reply::status(304)]);
            // min_entries.ipv6 = 1 and the cache has no IPv6: a 200 with that body would fail.
            let state = cached(&server.url("/api"), V4);
            let e = resolve(&cloudflare(&server, "[ipv4, ipv6]"), &state).unwrap_err();
            assert!(e.reason.contains("min_entries.ipv6"), "{e}");
            let mut tampered = V4.to_vec();
            tampered.extend(["10.0.0.0/8", "2400:cb00::/32"]);
            let state = cached(&server.url("/api"), &tampered);
            let e = resolve(&cloudflare(&server, "[ipv4, ipv6]"), &state).unwrap_err();
            assert!(e.reason.contains("special-purpose"), "{e}");
        }

        #[test]
        fn a_tampered_cache_is_not_served_in_an_outage() {
            // Nothing listens: every URL is unreachable.
            let server = Server::start();
            let url = server.url("/api");
            let config = cloudflare(&server, "[ipv4, ipv6]");
            drop(server);
            let mut tampered = V4.to_vec();
            tampered.extend(["10.0.0.0/8", "2400:cb00::/32"]);
            let r = resolve(&config, &cached(&url, &tampered)).unwrap();
            assert_eq!(r[0].served.kind(), "embedded");
            assert!(!r[0].list.contains(&"10.0.0.0/8".parse().unwrap()));
            assert!(
                r[0].notes[0].contains("ignoring the cached list"),
                "{:?}",
                r[0].notes
            );
            let mut good = V4.to_vec();
            good.push("2400:cb00::/32");
            let r = resolve(&config, &cached(&url, &good)).unwrap();
            assert_eq!(r[0].served.kind(), "cache");
        }

        #[test]
        fn a_bad_text_list_after_an_unreachable_one_fails_the_source() {
            let server = Server::start();
            server.route("/api", vec![Reply::status(503)]);
            // /v4 is unscripted (404 would be a bad answer): make it unreachable by a delay
            // past the timeout, and /v6 answers HTML.
            server.route(
                "/v4",
                vec![Reply::ok("1.2.3.0/24").delay(Duration::from_secs(5))],
            );
            server.route("/v6", vec![Reply::ok("<html>blocked</html>")]);
            let e = resolve(&cloudflare(&server, "[ipv4, ipv6]"), &State::default()).unwrap_err();
            assert!(e.reason.contains("HTML"), "{e}");
        }

        #[test]
        fn remote_lists_cannot_open_wide_or_reserved_ranges() {
            let server = Server::start();
            let config = config(&format!(
                "families: [ipv4, ipv6]\nguards: {{ min_entries: {{ ipv4: 1, ipv6: 0 }} }}\nsources:\n  - url: \"{}\"\n",
                server.url("/list")
            ));
            for (body, why) in [
                ("32.0.0.0/3\n", "widest_prefix.ipv4"),
                ("104.16.0.0/13\n::1.2.3.4/128\n", "global unicast"),
                ("104.16.0.0/13\n2400::/12\n", "widest_prefix.ipv6"),
            ] {
                server.route("/list", vec![Reply::ok(body)]);
                let e = resolve(&config, &State::default()).unwrap_err();
                assert!(e.reason.contains(why), "{body}: {e}");
            }
            server.route("/list", vec![Reply::ok("104.16.0.0/13\n2a06:98c0::/29\n")]);
            assert_eq!(
                resolve(&config, &State::default()).unwrap()[0].list.len(),
                2
            );
        }
    }
}
