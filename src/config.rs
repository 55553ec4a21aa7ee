//! The configuration file: parsing (YAML, unknown keys refused with their line), defaults, and
//! validation. Parsing only validates; nothing here does I/O beyond reading the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cfa_core::{parse_cidr, Family, Protocol, RuleSpec};
use cfa_iptables::{IpsetMode, Variant};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The default configuration path.
pub const DEFAULT_PATH: &str = "/etc/cf-allowlist/config.yaml";
/// Cloudflare's API endpoint for its ranges.
pub const CLOUDFLARE_API: &str = "https://api.cloudflare.com/client/v4/ips";
/// Cloudflare's plain-text lists, the fallback.
pub const CLOUDFLARE_TEXT: [&str; 2] = [
    "https://www.cloudflare.com/ips-v4",
    "https://www.cloudflare.com/ips-v6",
];

/// Why the configuration is unusable (exit 78).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or a key is unknown or has a bad value.
    #[error("invalid configuration {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("invalid configuration {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A running firewalld, else active ufw, else installed csf, else rules in iptables' filter
    /// INPUT, else nftables.
    #[default]
    Auto,
    /// nftables (`nft`).
    Nftables,
    /// iptables / ip6tables, optionally with ipset.
    Iptables,
    /// Uncomplicated Firewall.
    Ufw,
    /// ConfigServer Security & Firewall.
    Csf,
    /// firewalld (`firewall-cmd`), the default firewall of RHEL, Rocky, Alma and Fedora.
    Firewalld,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            BackendKind::Auto => "auto",
            BackendKind::Nftables => "nftables",
            BackendKind::Iptables => "iptables",
            BackendKind::Ufw => "ufw",
            BackendKind::Csf => "csf",
            BackendKind::Firewalld => "firewalld",
        };
        f.write_str(s)
    }
}

/// One source of ranges. The allowlist is the union of all sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Cloudflare's API, falling back to its text lists.
    Cloudflare {
        /// The API URL (JSON).
        api_url: String,
        /// The text list URLs (one CIDR a line), tried when the API fails.
        text_urls: Vec<String>,
    },
    /// A plain list over HTTPS: one CIDR a line, `#` comments.
    Url(String),
    /// A local plain list (operator's: special-purpose ranges allowed).
    File(PathBuf),
    /// Ranges written in the configuration (operator's: special-purpose ranges allowed).
    Cidrs(Vec<String>),
}

impl Source {
    /// The default Cloudflare source.
    pub fn cloudflare() -> Source {
        Source::Cloudflare {
            api_url: CLOUDFLARE_API.to_string(),
            text_urls: CLOUDFLARE_TEXT.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A stable identifier, the key of this source's cache entry.
    pub fn id(&self) -> String {
        match self {
            Source::Cloudflare { api_url, .. } if api_url == CLOUDFLARE_API => {
                "cloudflare".to_string()
            }
            Source::Cloudflare { api_url, .. } => format!("cloudflare:{api_url}"),
            Source::Url(u) => format!("url:{u}"),
            Source::File(p) => format!("file:{}", p.display()),
            Source::Cidrs(_) => "cidrs".to_string(),
        }
    }

    /// Whether the source is fetched over the network (and so validated as untrusted).
    pub fn is_remote(&self) -> bool {
        matches!(self, Source::Cloudflare { .. } | Source::Url(_))
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Source;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`cloudflare`, or a map with one key: cloudflare, url, file or cidrs")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Source, E> {
                match v {
                    "cloudflare" => Ok(Source::cloudflare()),
                    other => Err(E::unknown_variant(other, &["cloudflare"])),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Source, A::Error> {
                let key: String = map.next_key()?.ok_or_else(|| {
                    de::Error::custom("empty source: name one of cloudflare, url, file, cidrs")
                })?;
                let source = match key.as_str() {
                    "cloudflare" => {
                        let o: CloudflareOptions = map.next_value()?;
                        let default = Source::cloudflare();
                        let Source::Cloudflare { api_url, text_urls } = default else {
                            unreachable!()
                        };
                        Source::Cloudflare {
                            api_url: o.api_url.unwrap_or(api_url),
                            text_urls: o.text_urls.unwrap_or(text_urls),
                        }
                    }
                    "url" => Source::Url(map.next_value()?),
                    "file" => Source::File(map.next_value()?),
                    "cidrs" => Source::Cidrs(map.next_value()?),
                    other => {
                        return Err(de::Error::unknown_field(
                            other,
                            &["cloudflare", "url", "file", "cidrs"],
                        ))
                    }
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a source names one kind; `{extra}` must be a separate list item"
                    )));
                }
                Ok(source)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        match self {
            Source::Cloudflare { api_url, text_urls } => m.serialize_entry(
                "cloudflare",
                &CloudflareOptions {
                    api_url: Some(api_url.clone()),
                    text_urls: Some(text_urls.clone()),
                },
            )?,
            Source::Url(u) => m.serialize_entry("url", u)?,
            Source::File(p) => m.serialize_entry("file", p)?,
            Source::Cidrs(c) => m.serialize_entry("cidrs", c)?,
        }
        m.end()
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CloudflareOptions {
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    text_urls: Option<Vec<String>>,
}

/// Splits `10s` into `(10, "s")`: leading decimal digits, then the unit (spaces between allowed).
fn number_and_unit<'a>(text: &'a str, expected: &str) -> Result<(u64, &'a str), String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let n = num
        .parse()
        .map_err(|_| format!("{text:?} is not {expected}"))?;
    Ok((n, unit.trim()))
}

/// A duration written `10s`, `5m`, `1h`, `250ms` (or a number of seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, unit) = number_and_unit(s, "a duration like 10s, 5m, 1h, 250ms")?;
        let (ms_per_unit, unit_ok) = match unit {
            "ms" => (1, true),
            "" | "s" => (1000, true),
            "m" => (60_000, true),
            "h" => (3_600_000, true),
            "d" => (86_400_000, true),
            _ => (0, false),
        };
        if !unit_ok {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
        n.checked_mul(ms_per_unit)
            .map(|ms| HumanDuration(Duration::from_millis(ms)))
            .ok_or_else(|| format!("{s:?} is too long"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(86_400_000) && ms > 0 {
            write!(f, "{}d", ms / 86_400_000)
        } else if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// A size written `1MiB`, `512KiB`, `1MB`, or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, unit) = number_and_unit(s, "a size like 1MiB, 512KiB or 65536")?;
        let mult = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" | "KB" => 1000,
            "MB" => 1_000_000,
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (use B, KiB, MiB, KB, MB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}")
        }
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str("a number or a string with a unit")
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$t, E> {
                        v.to_string().parse().map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$t, E> {
                        u64::try_from(v)
                            .map_err(|_| E::custom("must not be negative"))?
                            .to_string()
                            .parse()
                            .map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
    };
}
string_serde!(HumanDuration);
string_serde!(ByteSize);

/// `guards.min_entries`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MinEntries {
    /// Fewest IPv4 ranges a remote source may serve.
    #[serde(default = "default_min_v4")]
    pub ipv4: usize,
    /// Fewest IPv6 ranges a remote source may serve.
    #[serde(default = "default_min_v6")]
    pub ipv6: usize,
}

fn default_min_v4() -> usize {
    3
}
fn default_min_v6() -> usize {
    1
}

impl Default for MinEntries {
    fn default() -> Self {
        MinEntries { ipv4: 3, ipv6: 1 }
    }
}

impl MinEntries {
    /// The minimum for one family.
    pub fn of(&self, family: Family) -> usize {
        match family {
            Family::V4 => self.ipv4,
            Family::V6 => self.ipv6,
        }
    }
}

/// `guards.widest_prefix`: the shortest prefix length a remote source may serve, per family.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WidestPrefix {
    /// Shortest IPv4 prefix length accepted from a remote source.
    pub ipv4: u8,
    /// Shortest IPv6 prefix length accepted from a remote source.
    pub ipv6: u8,
}

impl Default for WidestPrefix {
    /// `/10` and `/20`: room above Cloudflare's widest ranges (`/13`, and `/12` before 2021;
    /// `/29`), far from an eighth of the Internet (`32.0.0.0/3`).
    fn default() -> Self {
        WidestPrefix { ipv4: 10, ipv6: 20 }
    }
}

impl WidestPrefix {
    /// The bound for one family.
    pub fn of(&self, family: Family) -> u8 {
        match family {
            Family::V4 => self.ipv4,
            Family::V6 => self.ipv6,
        }
    }
}

/// `guards`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Guards {
    /// Fewest entries per family a remote source may serve.
    pub min_entries: MinEntries,
    /// The widest network (shortest prefix) per family a remote source may serve.
    pub widest_prefix: WidestPrefix,
    /// Largest share of the managed entries one plan may remove without `--force`.
    pub max_removal: f64,
}

impl Default for Guards {
    fn default() -> Self {
        Guards {
            min_entries: MinEntries::default(),
            widest_prefix: WidestPrefix::default(),
            max_removal: 0.5,
        }
    }
}

/// `fetch`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchSettings {
    /// Total time for one attempt.
    pub timeout: HumanDuration,
    /// Extra attempts after the first, with exponential backoff and jitter.
    pub retries: u32,
    /// Largest body accepted.
    pub max_bytes: ByteSize,
    /// PEM file of the certificate authorities to trust instead of the bundled webpki roots
    /// (`/etc/ssl/certs/ca-certificates.crt` for the system store, or an internal CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            timeout: HumanDuration(Duration::from_secs(10)),
            retries: 3,
            max_bytes: ByteSize(1 << 20),
            ca_file: None,
        }
    }
}

/// `audit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// A cached list older than this is reported as `stale`.
    pub max_age: HumanDuration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            max_age: HumanDuration(Duration::from_secs(7 * 86_400)),
        }
    }
}

/// `nftables`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NftSettings {
    /// Table name (`cf_allowlist`, ours; or an operator's table together with `chain`).
    pub table: String,
    /// Table family.
    pub family: String,
    /// An operator's chain to keep our rule in ("existing table" mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}

impl Default for NftSettings {
    fn default() -> Self {
        NftSettings {
            table: "cf_allowlist".into(),
            family: "inet".into(),
            chain: None,
        }
    }
}

/// `iptables`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IptablesSettings {
    /// Our chain.
    pub chain: String,
    /// `auto`, `always` or `never`: the iptables backend's own type, spelled as it parses it.
    #[serde(with = "by_name")]
    pub ipset: IpsetMode,
    /// `auto`, `nft` or `legacy`, likewise.
    #[serde(with = "by_name")]
    pub variant: Variant,
}

impl Default for IptablesSettings {
    fn default() -> Self {
        IptablesSettings {
            chain: "CF-ALLOWLIST".into(),
            ipset: IpsetMode::Auto,
            variant: Variant::Auto,
        }
    }
}

/// Serde for a backend's own option types through their `Display` / `FromStr` spelling (the
/// backend crates know nothing of serde), so that the configuration has no twin enums to glue.
mod by_name {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr<Err = String>,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `ufw`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UfwSettings {
    /// The comment that marks our rules.
    pub comment: String,
    /// ufw's rules directory.
    pub dir: PathBuf,
    /// How rules are changed: `frontend` (one Python process running ufw's own frontend for the
    /// whole plan) or `cli` (one `ufw` process per rule).
    #[serde(with = "by_name")]
    pub driver: cfa_ufw::Driver,
}

impl Default for UfwSettings {
    fn default() -> Self {
        UfwSettings {
            comment: cfa_core::RULE_COMMENT.into(),
            dir: "/etc/ufw".into(),
            driver: cfa_ufw::Driver::Frontend,
        }
    }
}

/// `csf`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsfSettings {
    /// csf's configuration directory.
    pub dir: PathBuf,
    /// Also keep `cf-allowlist.ignore` (plain CIDRs) included from `csf.ignore`, exempting
    /// Cloudflare from lfd blocking.
    pub ignore: bool,
    /// The reload command, an argument vector.
    pub reload: Vec<String>,
    /// The recovery command run after a failed reload left `csf.error` (csf then refuses `-ra`
    /// but runs `-r`), an argument vector.
    pub recover: Vec<String>,
}

impl Default for CsfSettings {
    fn default() -> Self {
        CsfSettings {
            dir: "/etc/csf".into(),
            ignore: true,
            reload: vec!["csf".into(), "-ra".into()],
            recover: vec!["csf".into(), "-r".into()],
        }
    }
}

/// `firewalld`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirewalldSettings {
    /// The name our firewalld objects derive from: ipsets `<name>-v4`/`-v6`, policies `<name>`
    /// and (restrict) `<name>-drop`.
    pub name: String,
}

impl Default for FirewalldSettings {
    fn default() -> Self {
        FirewalldSettings {
            name: cfa_firewalld::DEFAULT_NAME.into(),
        }
    }
}

fn default_sources() -> Vec<Source> {
    vec![Source::cloudflare()]
}

/// The whole configuration, defaults filled in.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which backend.
    pub backend: BackendKind,
    /// Where the ranges come from.
    pub sources: Vec<Source>,
    /// Families managed.
    pub families: Vec<Family>,
    /// Destination ports governed; empty: all ports.
    pub ports: Vec<u16>,
    /// `tcp`, `udp` or `both`.
    pub protocol: Protocol,
    /// Drop traffic to `ports` from everyone else.
    pub restrict: bool,
    /// Safety limits.
    pub guards: Guards,
    /// HTTP settings.
    pub fetch: FetchSettings,
    /// Where the last good list is kept.
    pub state_dir: PathBuf,
    /// The lock that keeps runs apart.
    pub lock_file: PathBuf,
    /// How long a run waits for another to finish before giving up.
    pub lock_timeout: HumanDuration,
    /// `audit` settings.
    pub audit: AuditSettings,
    /// nftables backend settings.
    pub nftables: NftSettings,
    /// iptables backend settings.
    pub iptables: IptablesSettings,
    /// ufw backend settings.
    pub ufw: UfwSettings,
    /// csf backend settings.
    pub csf: CsfSettings,
    /// firewalld backend settings.
    pub firewalld: FirewalldSettings,
    /// Outputs beyond the firewall (nginx, Apache, Fail2Ban), fed the same list.
    #[serde(skip_serializing_if = "crate::outputs::OutputSettings::is_empty")]
    pub outputs: crate::outputs::OutputSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: BackendKind::Auto,
            sources: default_sources(),
            families: Family::ALL.to_vec(),
            ports: vec![80, 443],
            protocol: Protocol::Tcp,
            restrict: false,
            guards: Guards::default(),
            fetch: FetchSettings::default(),
            state_dir: "/var/lib/cf-allowlist".into(),
            lock_file: "/run/cf-allowlist.lock".into(),
            lock_timeout: HumanDuration(Duration::from_secs(60)),
            audit: AuditSettings::default(),
            nftables: NftSettings::default(),
            iptables: IptablesSettings::default(),
            ufw: UfwSettings::default(),
            csf: CsfSettings::default(),
            firewalld: FirewalldSettings::default(),
            outputs: crate::outputs::OutputSettings::default(),
        }
    }
}

impl Config {
    /// Loads the configuration: `path` when given (it must exist), else the default path when it
    /// exists, else the built-in defaults. Returns the config and where it came from.
    pub fn load(path: Option<&Path>) -> Result<(Config, String), ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let bytes = match read_bounded(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Config::default(), "built-in defaults".into()));
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let name = path.display().to_string();
        let invalid = |message: String| ConfigError::Invalid {
            path: name.clone(),
            message,
        };
        // The YAML parser stops at a NUL byte and would read a torn file (a crash mid-write
        // leaves zeros) as whatever came before it, or as the defaults.
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            return Err(invalid(format!(
                "the file has a NUL byte at offset {at}: not a text file (a torn write?)"
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|e| invalid(format!("the file is not UTF-8 ({e})")))?;
        let config = Config::parse(&text, &name)?;
        Ok((config, name))
    }

    /// Parses and validates YAML text; `name` is used in messages.
    pub fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
                path: name.to_string(),
                message: e.to_string(),
            })?
        };
        config.validate().map_err(|message| ConfigError::Invalid {
            path: name.to_string(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.sources.is_empty() {
            return Err("sources: at least one source is needed".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.sources {
            if !seen.insert(s.id()) {
                return Err(format!("sources: {} is named twice", s.id()));
            }
            match s {
                Source::Cloudflare { api_url, text_urls } => {
                    check_url("sources.cloudflare.api_url", api_url)?;
                    if text_urls.len() > 2 {
                        return Err(
                            "sources.cloudflare.text_urls: at most two URLs (IPv4 list, IPv6 list)"
                                .into(),
                        );
                    }
                    for u in text_urls {
                        check_url("sources.cloudflare.text_urls", u)?;
                    }
                }
                Source::Url(u) => check_url("sources.url", u)?,
                Source::File(p) if !p.is_absolute() => {
                    return Err(format!(
                        "sources.file: {} must be an absolute path",
                        p.display()
                    ))
                }
                Source::File(_) => {}
                Source::Cidrs(list) => {
                    if list.is_empty() {
                        return Err("sources.cidrs: the list is empty".into());
                    }
                    for c in list {
                        parse_cidr(c.trim()).map_err(|e| format!("sources.cidrs: {e}"))?;
                    }
                }
            }
        }
        if self.families.is_empty() {
            return Err("families: at least one of ipv4, ipv6".into());
        }
        if self.ports.contains(&0) {
            return Err("ports: 0 is not a port".into());
        }
        if self.restrict && self.ports.is_empty() {
            return Err("restrict: true needs ports (dropping every port from everyone else would lock out SSH)".into());
        }
        if !(0.0..=1.0).contains(&self.guards.max_removal) {
            return Err(format!(
                "guards.max_removal: {} is not a share between 0 and 1",
                self.guards.max_removal
            ));
        }
        let widest = &self.guards.widest_prefix;
        if !(8..=32).contains(&widest.ipv4) || !(16..=128).contains(&widest.ipv6) {
            return Err(format!(
                "guards.widest_prefix: {{ ipv4: {}, ipv6: {} }} is out of range: ipv4 takes 8 to 32 and ipv6 16 to 128 (no remote list may open more than a /8 or a /16 at once)",
                widest.ipv4, widest.ipv6
            ));
        }
        if self.fetch.timeout.0.is_zero() {
            return Err("fetch.timeout: must be more than 0".into());
        }
        if self.fetch.retries > 10 {
            return Err("fetch.retries: at most 10".into());
        }
        if self.fetch.max_bytes.0 < 1024 {
            return Err("fetch.max_bytes: at least 1KiB".into());
        }
        if self.csf.reload.is_empty() || self.csf.reload[0].trim().is_empty() {
            return Err("csf.reload: the reload command is empty".into());
        }
        if self.csf.recover.is_empty() || self.csf.recover[0].trim().is_empty() {
            return Err("csf.recover: the recovery command is empty".into());
        }
        for (key, path) in [
            ("state_dir", &self.state_dir),
            ("lock_file", &self.lock_file),
            ("csf.dir", &self.csf.dir),
            ("ufw.dir", &self.ufw.dir),
        ]
        .into_iter()
        .chain(self.fetch.ca_file.as_ref().map(|p| ("fetch.ca_file", p)))
        {
            if !path.is_absolute() {
                return Err(format!(
                    "{key}: {} must be an absolute path (a run from cron or systemd has no meaningful working directory)",
                    path.display()
                ));
            }
        }
        self.outputs.validate()?;
        if self.ufw.comment.is_empty() || self.ufw.comment.contains(['\'', '"', '\n']) {
            return Err("ufw.comment: must be non-empty, without quotes or newlines".into());
        }
        for (key, name) in [("nftables.table", &self.nftables.table)] {
            if name.is_empty()
                || name.len() > 28
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "{key}: {name:?} must be 1 to 28 letters, digits, '_' or '-'"
                ));
            }
        }
        Ok(())
    }

    /// The rule shape every backend is given.
    pub fn rule_spec(&self) -> RuleSpec {
        let mut ports = self.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        let mut families = self.families.clone();
        families.sort();
        families.dedup();
        RuleSpec {
            ports,
            protocol: self.protocol,
            restrict: self.restrict,
            families,
        }
    }

    /// The effective configuration as YAML (for `check-config`).
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The largest configuration file read: far above any real one, and a bound on `-c /dev/zero`.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads at most [`MAX_CONFIG_BYTES`]; a larger file (or an endless one) is an error.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {} bytes; not a configuration file",
                MAX_CONFIG_BYTES
            ),
        ));
    }
    Ok(bytes)
}

/// https always; plain http only to a loopback host (tests, local mirrors).
fn check_url(key: &str, url: &str) -> Result<(), String> {
    crate::fetch::check_url(url).map_err(|e| format!("{key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        Config::parse(yaml, "test.yaml").unwrap_err().to_string()
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("", "x").unwrap(), Config::default());
        assert_eq!(
            Config::parse("# only comments\n", "x").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn the_spec_example_parses() {
        let yaml = r#"
backend: nftables
sources:
  - cloudflare
  - url: "https://lists.internal.example/extra.txt"
  - file: "/etc/cf-allowlist/extra.txt"
  - cidrs: ["203.0.113.7/32"]
families: [ipv4, ipv6]
ports: [443, 80, 443]
protocol: both
restrict: true
guards:
  min_entries: { ipv4: 3, ipv6: 1 }
  max_removal: 0.25
fetch: { timeout: 5s, retries: 2, max_bytes: 512KiB }
state_dir: /tmp/state
lock_file: /tmp/lock
nftables: { table: cf_allowlist, family: inet }
iptables: { chain: CF-ALLOWLIST, ipset: never, variant: legacy }
ufw: { comment: cf-allowlist, driver: cli }
csf: { dir: /etc/csf, ignore: false, reload: ["csf", "-r"] }
"#;
        let c = Config::parse(yaml, "x").unwrap();
        assert_eq!(c.backend, BackendKind::Nftables);
        assert_eq!(c.sources.len(), 4);
        assert_eq!(c.sources[0], Source::cloudflare());
        assert_eq!(c.fetch.max_bytes, ByteSize(512 * 1024));
        assert_eq!(c.fetch.timeout, HumanDuration(Duration::from_secs(5)));
        assert_eq!(c.rule_spec().ports, vec![80, 443]);
        assert_eq!(c.rule_spec().protocol, Protocol::Both);
        assert_eq!(c.iptables.variant, Variant::Legacy);
        assert_eq!(c.ufw.driver, cfa_ufw::Driver::Cli);
        // The effective configuration renders and reads back the same.
        assert_eq!(Config::parse(&c.to_yaml(), "y").unwrap(), c);
    }

    #[test]
    fn cloudflare_overrides_for_mirrors() {
        let c = Config::parse(
            "sources:\n  - cloudflare: { api_url: \"http://127.0.0.1:8080/client/v4/ips\" }\n",
            "x",
        )
        .unwrap();
        let Source::Cloudflare { api_url, text_urls } = &c.sources[0] else {
            panic!()
        };
        assert_eq!(api_url, "http://127.0.0.1:8080/client/v4/ips");
        assert_eq!(text_urls.len(), 2);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let e = err("backend: nftables\nport: [80]\n");
        assert!(e.contains("port") && e.contains('2'), "{e}");
        let e = err("guards:\n  max_removal: 0.5\n  min_entry: 3\n");
        assert!(e.contains("min_entry") && e.contains('3'), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(err("backend: pf\n").contains("pf"));
        assert!(
            err("ports: [80, 70000]\n").contains("70000")
                || err("ports: [80, 70000]\n").contains("ports")
        );
        assert!(err("ports: [0]\n").contains("ports"));
        assert!(err("restrict: true\nports: []\n").contains("restrict"));
        assert!(err("guards: { max_removal: 2 }\n").contains("max_removal"));
        assert!(err("fetch: { timeout: 10 parsecs }\n").contains("parsecs"));
        assert!(err("sources: []\n").contains("sources"));
        assert!(err("sources: [{url: \"http://example.com/x\"}]\n").contains("sources.url"));
        assert!(err("sources: [{cidrs: [\"010.1.2.0/24\"]}]\n").contains("010.1.2.0/24"));
        assert!(err("sources: [{cidrs: [\"10.1.2.1/24\"]}]\n").contains("host bits"));
        assert!(err("sources: [{file: \"relative.txt\"}]\n").contains("absolute"));
        assert!(err("sources: [cloudflare, cloudflare]\n").contains("twice"));
        assert!(err("sources: [{url: \"https://a/x\", file: \"/x\"}]\n").contains("separate"));
        assert!(err("families: [ipv5]\n").contains("ipv5"));
        assert!(err("nftables: { table: \"a b\" }\n").contains("nftables.table"));
    }

    #[test]
    fn outputs_are_read_validated_and_rendered_back() {
        let c = Config::parse("outputs:\n  nginx:\n  fail2ban: { dir: /srv/f2b }\n", "x").unwrap();
        assert!(c.outputs.nginx.is_some() && c.outputs.apache.is_none());
        assert_eq!(Config::parse(&c.to_yaml(), "y").unwrap(), c);
        assert!(!Config::default().to_yaml().contains("outputs"));
        let e = err("outputs:\n  nginx: { path: conf.d/x.conf }\n");
        assert!(e.contains("outputs.nginx.path"), "{e}");
    }

    #[test]
    fn firewalld_is_a_backend_with_its_own_settings() {
        let c = Config::parse("backend: firewalld\nfirewalld: { name: web-cf }\n", "x").unwrap();
        assert_eq!(c.backend, BackendKind::Firewalld);
        assert_eq!(c.backend.to_string(), "firewalld");
        assert_eq!(c.firewalld.name, "web-cf");
        assert_eq!(Config::default().firewalld.name, "cf-allowlist");
        assert_eq!(Config::parse(&c.to_yaml(), "y").unwrap(), c);
        let e = err("firewalld: { zone: public }\n");
        assert!(e.contains("zone") && e.contains('1'), "{e}");
    }

    #[test]
    fn missing_explicit_file_is_an_error_but_missing_default_is_not() {
        let e = Config::load(Some(Path::new("/nonexistent/cf.yaml"))).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "10m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(600)
        );
        assert_eq!("2h".parse::<HumanDuration>().unwrap().to_string(), "2h");
        assert_eq!("1MiB".parse::<ByteSize>().unwrap().0, 1 << 20);
        assert!("1 TB".parse::<ByteSize>().is_err());
        assert!("-5s".parse::<HumanDuration>().is_err());
        assert!("99999999999999999h"
            .parse::<HumanDuration>()
            .unwrap_err()
            .contains("too long"));
        assert_eq!(
            "5 m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(300)
        );
    }
}
