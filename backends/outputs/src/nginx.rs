//! nginx: trust `CF-Connecting-IP` from Cloudflare's ranges only (ngx_http_realip_module).
//!
//! The file holds one `set_real_ip_from CIDR;` per range and `real_ip_header CF-Connecting-IP;`,
//! directives of the `http` context: it belongs where nginx includes files inside `http { }`
//! (Debian's `/etc/nginx/conf.d/*.conf`). A request from an address outside every range keeps
//! that address, whatever header it sends.

use std::path::PathBuf;

use cfa_core::Runner;

use crate::realip::{Dialect, RealIp, ServerOptions};

/// Where the file goes by default (included inside `http { }` by Debian's nginx.conf).
pub const DEFAULT_PATH: &str = "/etc/nginx/conf.d/cf-allowlist-realip.conf";

pub(crate) const DIALECT: Dialect = Dialect {
    name: "nginx",
    server: "nginx",
    before: &[],
    entry: ("set_real_ip_from ", ";"),
    after: &["real_ip_header CF-Connecting-IP;"],
    hint: "nginx refused a directive of cf-allowlist's file: it needs the realip module \
           (ngx_http_realip_module), the file included in the http context, and no other \
           real_ip_header in that context",
};

/// The defaults: [`DEFAULT_PATH`], `nginx -t`, `nginx -s reload`.
pub fn default_options() -> ServerOptions {
    ServerOptions {
        path: PathBuf::from(DEFAULT_PATH),
        test: vec!["nginx".into(), "-t".into()],
        reload: vec!["nginx".into(), "-s".into(), "reload".into()],
    }
}

/// The nginx output for `options`, running its commands through `runner`.
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
