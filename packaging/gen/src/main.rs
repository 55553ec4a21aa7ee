//! `cfa-gen OUT_DIR`: writes cf-allowlist's man pages and shell completions, generated from the
//! clap definition ([`cf_allowlist::cli::Cli`]), so that they can never drift from the binary.
//!
//! Output (the packaging metadata in the root `Cargo.toml` installs these paths):
//!
//! - `OUT_DIR/man/cf-allowlist.8` and one page per subcommand (`cf-allowlist-sync.8`, ...)
//! - `OUT_DIR/completions/bash/cf-allowlist`, `zsh/_cf-allowlist`, `fish/cf-allowlist.fish`
//!
//! Run by `packaging/build.sh` before cargo-deb and cargo-generate-rpm.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cf_allowlist::app::exit;
use cf_allowlist::cli::Cli;
use cf_allowlist::config::{Config, DEFAULT_PATH};
use clap::CommandFactory;
use clap_complete::Shell;

/// The binary's name, as installed.
const BIN: &str = "cf-allowlist";
/// System administration commands: the tool runs as root and changes the firewall.
const SECTION: &str = "8";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.as_slice() {
        [dir] if !dir.starts_with('-') => PathBuf::from(dir),
        _ => {
            eprintln!("usage: cfa-gen OUT_DIR  (writes OUT_DIR/man/*.8 and OUT_DIR/completions/)");
            return ExitCode::from(exit::USAGE);
        }
    };
    match generate(&out) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cfa-gen: {e}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Writes every page and completion script under `out`; returns the files written.
fn generate(out: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    let man_dir = out.join("man");
    create_dir(&man_dir)?;
    for (name, page) in man_pages()? {
        let path = man_dir.join(name);
        write(&path, &page)?;
        written.push(path);
    }
    for (shell, dir, file) in completion_files() {
        let dir = out.join("completions").join(dir);
        create_dir(&dir)?;
        let path = dir.join(file);
        write(&path, &completion(shell))?;
        written.push(path);
    }
    Ok(written)
}

/// Each shell with its directory under `completions/` and the file name its loader looks for:
/// bash-completion loads `completions/<command>`, zsh's compinit `_<command>` from `$fpath`, fish
/// `<command>.fish` from `$fish_complete_path`.
fn completion_files() -> [(Shell, &'static str, String); 3] {
    [
        (Shell::Bash, "bash", BIN.to_string()),
        (Shell::Zsh, "zsh", format!("_{BIN}")),
        (Shell::Fish, "fish", format!("{BIN}.fish")),
    ]
}

/// The completion script for `shell`.
fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, BIN, &mut buf);
    if shell == Shell::Bash {
        buf = fix_bash_hyphenated_bin(&String::from_utf8_lossy(&buf)).into_bytes();
    }
    buf
}

/// clap_complete's bash script (4.6.12) spells a hyphenated binary name two ways: the loop that
/// finds the subcommand sets `cmd="cf__allowlist__subcmd__sync"`, while the case arm that offers
/// that subcommand's options reads `cf__subcmd__allowlist__subcmd__sync)`, so no option of any
/// subcommand ever completes (clap-rs/clap#6421, open). Respell the arms as the loop does; once
/// clap_complete is fixed there is nothing left to replace.
fn fix_bash_hyphenated_bin(script: &str) -> String {
    let wrong = format!("{}__subcmd__", BIN.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", BIN.replace('-', "__"));
    script.replace(&wrong, &right)
}

/// `cf-allowlist.8` and one page per (visible) subcommand, as `(file name, roff text)`.
fn man_pages() -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    let main = clap_mangen::Man::new(cmd.clone()).section(SECTION);
    let mut text = render(&main)?;
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| format!("{BIN}-{}({SECTION})", s.get_name()))
        .collect();
    let has_audit = cmd.find_subcommand("audit").is_some();
    text.extend_from_slice(roff_sections(&main_sections(&subs, has_audit)).as_bytes());
    pages.push((main.get_filename(), text));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let page = clap_mangen::Man::new(sub.clone()).section(SECTION);
        let mut text = render(&page)?;
        let see_also = vec![Section::text("SEE ALSO", &[&format!("{BIN}({SECTION})")])];
        text.extend_from_slice(roff_sections(&see_also).as_bytes());
        pages.push((page.get_filename(), text));
    }
    Ok(pages)
}

fn render(man: &clap_mangen::Man) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    man.render(&mut buf)
        .map_err(|e| format!("cannot render {}: {e}", man.get_filename()))?;
    Ok(buf)
}

/// A man page section: paragraphs, then tagged items (`.TP`).
struct Section {
    heading: &'static str,
    paragraphs: Vec<String>,
    items: Vec<(String, String)>,
}

impl Section {
    fn text(heading: &'static str, paragraphs: &[&str]) -> Section {
        Section {
            heading,
            paragraphs: paragraphs.iter().map(|p| p.to_string()).collect(),
            items: Vec::new(),
        }
    }

    fn items(heading: &'static str, intro: &str, items: Vec<(String, String)>) -> Section {
        Section {
            heading,
            paragraphs: vec![intro.to_string()],
            items,
        }
    }
}

/// What the clap definition cannot say: exit codes, files, environment. The values come from the
/// library (exit codes, default paths), so a change there changes the page.
fn main_sections(subcommand_pages: &[String], has_audit: bool) -> Vec<Section> {
    let d = Config::default();
    let (intro, changed) = if has_audit {
        (
            "Every command (audit --output nagios answers with the plugin codes 0 OK, 1 WARNING, \
             2 CRITICAL, 3 UNKNOWN instead):",
            "sync --detailed-exitcode: changes were applied (or planned, with --dry-run); audit: \
             drift was found.",
        )
    } else {
        (
            "Every command:",
            "sync --detailed-exitcode: changes were applied (or planned, with --dry-run).",
        )
    };
    vec![
        Section::items(
            "EXIT STATUS",
            intro,
            vec![
                (exit::OK.to_string(), "Success.".into()),
                (
                    exit::FAILURE.to_string(),
                    "Runtime failure (a source, the backend, the lock, verification); nothing was \
                     half-applied."
                        .into(),
                ),
                (exit::CHANGED.to_string(), changed.into()),
                (exit::USAGE.to_string(), "Usage error.".into()),
                (exit::CONFIG.to_string(), "Invalid configuration.".into()),
            ],
        ),
        Section::items(
            "FILES",
            "",
            vec![
                (
                    DEFAULT_PATH.into(),
                    "The configuration (YAML). When it does not exist the built-in defaults apply; \
                     the packaged file is commented and equal in effect to them."
                        .into(),
                ),
                (
                    d.state_dir.display().to_string(),
                    "The last good list and its ETag (state_dir), served when a source cannot be \
                     reached."
                        .into(),
                ),
                (
                    d.lock_file.display().to_string(),
                    "The lock that keeps runs apart (lock_file).".into(),
                ),
                (
                    "cf-allowlist.timer, cf-allowlist.service".into(),
                    "The systemd timer and the hardened one-shot service it starts. Installed, not \
                     enabled: systemctl enable --now cf-allowlist.timer"
                        .into(),
                ),
                (
                    "cf-allowlist-boot.service".into(),
                    "Re-applies the cached list (sync --offline) at boot, after the firewall's own \
                     unit and before the network: systemctl enable cf-allowlist-boot.service"
                        .into(),
                ),
                (
                    "/etc/cron.d/cf-allowlist".into(),
                    "For hosts without systemd (it does nothing when systemd runs the host): sync \
                     every six hours after a random delay of up to 30 minutes."
                        .into(),
                ),
            ],
        ),
        Section::items(
            "ENVIRONMENT",
            "",
            vec![(
                "CF_ALLOWLIST_LOG".into(),
                "A tracing filter for the log on stderr (for example debug, which shows every \
                 tool call), overriding -q and -v."
                    .into(),
            )],
        ),
        Section::text(
            "NOTES",
            &[
                "Removing or purging the package leaves the firewall as it is. To remove the \
               allowlist from the firewall, run cf-allowlist purge before removing the package.",
            ],
        ),
        Section::text(
            "SEE ALSO",
            &[&format!(
                "{}, nft(8), iptables(8), ufw(8), csf(1), systemd.timer(5), crontab(5)",
                subcommand_pages.join(", ")
            )],
        ),
    ]
}

/// Renders sections as roff.
fn roff_sections(sections: &[Section]) -> String {
    let mut out = String::new();
    for s in sections {
        out.push_str(&format!(".SH \"{}\"\n", s.heading));
        for p in s.paragraphs.iter().filter(|p| !p.is_empty()) {
            out.push_str(&roff_line(p));
            out.push('\n');
        }
        for (tag, body) in &s.items {
            out.push_str(".TP\n");
            out.push_str(&format!("\\fB{}\\fR\n", roff_escape(tag)));
            out.push_str(&roff_line(body));
            out.push('\n');
        }
    }
    out
}

/// Escapes text for roff: backslashes, hyphens (so that options stay ASCII hyphen-minus when
/// copied from the page), and a leading `.` or `'`, which would start a request.
fn roff_escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\e"),
            '-' => s.push_str("\\-"),
            c => s.push(c),
        }
    }
    s
}

fn roff_line(text: &str) -> String {
    let escaped = roff_escape(text);
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

fn create_dir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create directory {}: {e}", dir.display()))
}

fn write(path: &Path, contents: &[u8]) -> Result<(), String> {
    let mut f =
        fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible subcommand gets a page and appears in the completion scripts: a new
    /// subcommand in the clap definition shows up without touching the packaging.
    #[test]
    fn pages_and_completions_cover_every_subcommand() {
        let cmd = Cli::command();
        let subs: Vec<String> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect();
        assert!(subs.contains(&"sync".to_string()), "{subs:?}");
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"cf-allowlist.8"), "{names:?}");
        for sub in &subs {
            let page = format!("cf-allowlist-{sub}.8");
            assert!(names.contains(&page.as_str()), "{page} missing: {names:?}");
        }
        let main = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(main.contains(".TH cf-allowlist 8"), "{main}");
        assert!(main.contains(".SH \"EXIT STATUS\""), "{main}");
        assert!(main.contains("/etc/cf\\-allowlist/config.yaml"), "{main}");
        for sub in &subs {
            let reference = format!("cf\\-allowlist\\-{}(8)", sub.replace('-', "\\-"));
            assert!(main.contains(&reference), "SEE ALSO lacks {reference}");
        }
        for (shell, _, _) in completion_files() {
            let script = String::from_utf8(completion(shell)).unwrap();
            for sub in &subs {
                assert!(script.contains(sub.as_str()), "{shell}: {sub} missing");
            }
        }
    }

    /// Every state the bash script's loop can reach has a case arm (the arms were unreachable
    /// for a hyphenated binary name before `fix_bash_hyphenated_bin`).
    #[test]
    fn bash_states_have_case_arms() {
        let script = String::from_utf8(completion(Shell::Bash)).unwrap();
        let states: Vec<&str> = script
            .lines()
            .filter_map(|l| l.trim().strip_prefix("cmd=\""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|s| !s.is_empty())
            .collect();
        assert!(
            states.contains(&"cf__allowlist__subcmd__sync"),
            "{states:?}"
        );
        for state in states {
            let arm = format!("        {state})");
            assert!(
                script.lines().any(|l| l == arm),
                "no case arm for state {state}"
            );
        }
        let raw = {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(Shell::Bash, &mut cmd, BIN, &mut buf);
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(
            fix_bash_hyphenated_bin(&fix_bash_hyphenated_bin(&raw)),
            fix_bash_hyphenated_bin(&raw),
            "the respelling is idempotent"
        );
    }

    #[test]
    fn roff_escapes_requests_and_hyphens() {
        assert_eq!(roff_line(".x -q \\"), "\\&.x \\-q \\e");
        assert_eq!(roff_line("'quoted"), "\\&'quoted");
        assert_eq!(roff_line("plain"), "plain");
    }

    /// The generator writes where it is told, and fails naming the path when it cannot.
    #[test]
    fn writes_the_tree_and_names_what_failed() {
        let dir = std::env::temp_dir().join(format!("cfa-gen-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let files = generate(&dir).unwrap();
        for f in ["man/cf-allowlist.8", "completions/bash/cf-allowlist"] {
            assert!(files.contains(&dir.join(f)), "{f}: {files:?}");
        }
        assert!(dir.join("completions/zsh/_cf-allowlist").is_file());
        assert!(dir.join("completions/fish/cf-allowlist.fish").is_file());
        // A file where a directory must go.
        let blocked = dir.join("blocked");
        fs::write(&blocked, b"").unwrap();
        let err = generate(&blocked).unwrap_err();
        assert!(
            err.contains(&blocked.join("man").display().to_string()),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
