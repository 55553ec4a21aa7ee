//! Apache httpd: trust `CF-Connecting-IP` from Cloudflare's ranges only (mod_remoteip).
//!
//! The file holds `RemoteIPHeader CF-Connecting-IP` and one `RemoteIPTrustedProxy CIDR` per
//! range (trusted, not internal, proxies: Cloudflare's addresses are public), directives of the
//! server configuration that virtual hosts inherit. mod_remoteip must be loaded (Debian:
//! `a2enmod remoteip`); without it the configuration test fails and nothing changes.
//! `apachectl graceful` starts an Apache that is not running: the reload command is the
//! operator's to choose (`systemctl reload apache2` under systemd).

use std::path::PathBuf;

use cfa_core::Runner;

use crate::realip::{Dialect, RealIp, ServerOptions};

/// Where the file goes by default (Debian reads `/etc/apache2/conf-enabled/*.conf`).
pub const DEFAULT_PATH: &str = "/etc/apache2/conf-enabled/cf-allowlist-remoteip.conf";

pub(crate) const DIALECT: Dialect = Dialect {
    name: "apache",
    server: "Apache",
    before: &["RemoteIPHeader CF-Connecting-IP"],
    entry: ("RemoteIPTrustedProxy ", ""),
    after: &[],
    hint: "Apache refused a directive of cf-allowlist's file: it needs mod_remoteip loaded \
           (Debian: `a2enmod remoteip`)",
};

/// The defaults: [`DEFAULT_PATH`], `apachectl configtest`, `apachectl graceful`.
pub fn default_options() -> ServerOptions {
    ServerOptions {
        path: PathBuf::from(DEFAULT_PATH),
        test: vec!["apachectl".into(), "configtest".into()],
        reload: vec!["apachectl".into(), "graceful".into()],
    }
}

/// The Apache output for `options`, running its commands through `runner`.
pub fn output(options: ServerOptions, runner: Runner) -> RealIp {
    RealIp::new(DIALECT, options, runner)
}

/// The file's text for `list` (for tests and the documentation).
pub fn render(list: &cfa_core::AllowList) -> String {
    DIALECT.render(list)
}

/// The ranges of a file we wrote and why it is not as we write it, if it is not; `None` when
/// the bytes are not ours.
pub fn parse(bytes: &[u8]) -> Option<(cfa_core::AllowList, Option<String>)> {
    DIALECT.parse(bytes)
}
