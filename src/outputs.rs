//! Outputs beyond the firewall (`outputs:` in the configuration): the nginx and Apache real-IP
//! files and the Fail2Ban `ignoreip` drop-in, fed the same validated list in the same run.
//!
//! [`prepare`] reads and plans every configured output before the firewall is touched (a file
//! at our path we did not write, a Fail2Ban configuration that does not load: the run fails with
//! nothing changed); [`run`] then applies (or, for a dry run, checks) each planned change. Every
//! output is tried even when one fails, and each failure leaves that output as it was (its file
//! restored, its server not reloaded): "consistent" means each output, like the firewall, holds
//! either the whole old list or the whole new one.

use std::path::PathBuf;

use cfa_core::{AllowList, BackendError, Runner};
use cfa_outputs::fail2ban::{Fail2ban, Fail2banOptions};
use cfa_outputs::{apache, nginx, Change, Current, Output, ServerOptions};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `outputs:`: each key present turns that output on (`nginx:` alone means the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSettings {
    /// The nginx real-IP file.
    #[serde(
        deserialize_with = "present_means_on",
        skip_serializing_if = "Option::is_none"
    )]
    pub nginx: Option<NginxSettings>,
    /// The Apache mod_remoteip file.
    #[serde(
        deserialize_with = "present_means_on",
        skip_serializing_if = "Option::is_none"
    )]
    pub apache: Option<ApacheSettings>,
    /// The Fail2Ban `ignoreip` drop-in.
    #[serde(
        deserialize_with = "present_means_on",
        skip_serializing_if = "Option::is_none"
    )]
    pub fail2ban: Option<Fail2banSettings>,
}

/// A key that is present is an output turned on, even with no value (`nginx:` reads as YAML
/// null): an operator who names an output and gets nothing would not notice.
fn present_means_on<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// `outputs.nginx`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NginxSettings {
    /// The generated file; it must be included inside `http { }`.
    pub path: PathBuf,
    /// Tests nginx's whole configuration, an argument vector.
    pub test: Vec<String>,
    /// Makes the running nginx load it, an argument vector.
    pub reload: Vec<String>,
}

impl Default for NginxSettings {
    fn default() -> Self {
        let d = nginx::default_options();
        NginxSettings {
            path: d.path,
            test: d.test,
            reload: d.reload,
        }
    }
}

/// `outputs.apache`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApacheSettings {
    /// The generated file, read in the server configuration (needs mod_remoteip).
    pub path: PathBuf,
    /// Tests Apache's whole configuration, an argument vector.
    pub test: Vec<String>,
    /// Makes the running Apache load it, an argument vector.
    pub reload: Vec<String>,
}

impl Default for ApacheSettings {
    fn default() -> Self {
        let d = apache::default_options();
        ApacheSettings {
            path: d.path,
            test: d.test,
            reload: d.reload,
        }
    }
}

/// `outputs.fail2ban`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fail2banSettings {
    /// Fail2Ban's configuration directory (`fail2ban-client -c`).
    pub dir: PathBuf,
    /// The drop-in's name inside `<dir>/jail.d/` (a `.local` file sorting after the others).
    pub file: String,
    /// The client program; it finds the server's socket in `<dir>/fail2ban.conf`.
    pub client: String,
}

impl Default for Fail2banSettings {
    fn default() -> Self {
        let d = Fail2banOptions::default();
        Fail2banSettings {
            dir: d.dir,
            file: d.file,
            client: d.client,
        }
    }
}

impl OutputSettings {
    /// Whether no output is configured.
    pub fn is_empty(&self) -> bool {
        self.nginx.is_none() && self.apache.is_none() && self.fail2ban.is_none()
    }

    /// What is wrong, naming the key (for `Config::validate`, exit 78).
    pub fn validate(&self) -> Result<(), String> {
        let mut paths = Vec::new();
        for (key, s) in [
            (
                "nginx",
                self.nginx.as_ref().map(|s| (&s.path, &s.test, &s.reload)),
            ),
            (
                "apache",
                self.apache.as_ref().map(|s| (&s.path, &s.test, &s.reload)),
            ),
        ] {
            let Some((path, test, reload)) = s else {
                continue;
            };
            absolute(&format!("outputs.{key}.path"), path)?;
            if path.file_name().is_none() {
                return Err(format!(
                    "outputs.{key}.path: {} names no file",
                    path.display()
                ));
            }
            command(&format!("outputs.{key}.test"), test)?;
            command(&format!("outputs.{key}.reload"), reload)?;
            paths.push((key, path.clone()));
        }
        if let Some(f) = &self.fail2ban {
            absolute("outputs.fail2ban.dir", &f.dir)?;
            if let Some(problem) = cfa_outputs::fail2ban::file_name_problem(&f.file) {
                return Err(format!("outputs.fail2ban.file: {problem}"));
            }
            if f.client.trim().is_empty() {
                return Err("outputs.fail2ban.client: the program is empty".into());
            }
            paths.push(("fail2ban", f.dir.join("jail.d").join(&f.file)));
        }
        for (i, (a, pa)) in paths.iter().enumerate() {
            if let Some((b, _)) = paths[i + 1..].iter().find(|(_, pb)| pb == pa) {
                return Err(format!(
                    "outputs.{a} and outputs.{b} name the same file {}: each output owns one file of its own",
                    pa.display()
                ));
            }
        }
        Ok(())
    }

    /// The configured outputs, in the order they run: nginx, Apache, Fail2Ban.
    pub fn build(&self, runner: &Runner) -> Result<Vec<Box<dyn Output>>, BackendError> {
        let mut outputs: Vec<Box<dyn Output>> = Vec::new();
        if let Some(s) = &self.nginx {
            outputs.push(Box::new(nginx::output(
                ServerOptions {
                    path: s.path.clone(),
                    test: s.test.clone(),
                    reload: s.reload.clone(),
                },
                runner.clone(),
            )));
        }
        if let Some(s) = &self.apache {
            outputs.push(Box::new(apache::output(
                ServerOptions {
                    path: s.path.clone(),
                    test: s.test.clone(),
                    reload: s.reload.clone(),
                },
                runner.clone(),
            )));
        }
        if let Some(s) = &self.fail2ban {
            outputs.push(Box::new(Fail2ban::new(
                Fail2banOptions {
                    dir: s.dir.clone(),
                    file: s.file.clone(),
                    client: s.client.clone(),
                },
                runner.clone(),
            )?));
        }
        Ok(outputs)
    }
}

fn absolute(key: &str, path: &std::path::Path) -> Result<(), String> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "{key}: {} must be an absolute path (a run from cron or systemd has no meaningful working directory)",
            path.display()
        ))
    }
}

fn command(key: &str, argv: &[String]) -> Result<(), String> {
    match argv.first() {
        Some(program) if !program.trim().is_empty() => Ok(()),
        _ => Err(format!("{key}: the command is empty")),
    }
}

/// Why the outputs could not be planned: nothing was changed.
#[derive(Debug, thiserror::Error)]
#[error("output {name} ({path}): {source}")]
pub struct PrepareError {
    /// The output.
    pub name: String,
    /// Its file.
    pub path: String,
    /// The cause.
    #[source]
    pub source: Box<BackendError>,
}

/// One output, read and planned.
struct Item {
    output: Box<dyn Output>,
    current: Current,
    change: Option<Change>,
}

/// Every output read and planned, before anything is applied.
pub struct Prepared {
    items: Vec<Item>,
    /// What the operator should know from planning (a Fail2Ban jail that cannot be extended).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field(
                "outputs",
                &self
                    .items
                    .iter()
                    .map(|i| (i.output.name(), i.change.is_some()))
                    .collect::<Vec<_>>(),
            )
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl Prepared {
    /// Whether any output would change.
    pub fn changes(&self) -> bool {
        self.items.iter().any(|i| i.change.is_some())
    }
}

/// Reads and plans every configured output for `list` (the validated list of the configured
/// families); `degraded`: add-only. Writes nothing.
pub fn prepare(
    settings: &OutputSettings,
    list: &AllowList,
    degraded: bool,
) -> Result<Prepared, PrepareError> {
    prepare_with(built(settings)?, Some(list), degraded)
}

/// Reads every configured output and plans removing its file. Writes nothing.
pub fn prepare_purge(settings: &OutputSettings) -> Result<Prepared, PrepareError> {
    prepare_with(built(settings)?, None, false)
}

fn built(settings: &OutputSettings) -> Result<Vec<Box<dyn Output>>, PrepareError> {
    settings
        .build(&Runner::new())
        .map_err(|source| PrepareError {
            name: "fail2ban".into(),
            path: settings
                .fail2ban
                .as_ref()
                .map(|f| f.dir.display().to_string())
                .unwrap_or_default(),
            source: Box::new(source),
        })
}

/// [`prepare`] for given outputs (the tests' fakes); `None`: purge.
///
/// Degraded (a source served a fallback): coverage never shrinks, as for the firewall. Each
/// output's target is the union of what its file holds and the fallback list, aggregated, so a
/// range only ever gives way to a wider one covering it.
pub fn prepare_with(
    outputs: Vec<Box<dyn Output>>,
    list: Option<&AllowList>,
    degraded: bool,
) -> Result<Prepared, PrepareError> {
    let mut items = Vec::new();
    let mut warnings = Vec::new();
    for output in outputs {
        let fail = |source| PrepareError {
            name: output.name().to_string(),
            path: output.path().display().to_string(),
            source: Box::new(source),
        };
        let current = output.read().map_err(fail)?;
        let target = list.map(|l| {
            if degraded {
                l.union(&current.entries).aggregate()
            } else {
                l.clone()
            }
        });
        if target.as_ref().is_some_and(AllowList::is_empty) {
            return Err(fail(BackendError::Conflict(
                "the list is empty; refusing to write it".into(),
            )));
        }
        let planned = output.plan(&current, target.as_ref()).map_err(fail)?;
        warnings.extend(planned.warnings);
        items.push(Item {
            output,
            current,
            change: planned.change,
        });
    }
    Ok(Prepared { items, warnings })
}

/// What one output did in this run (one entry per output in the JSON report).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// `nginx`, `apache`, `fail2ban`.
    pub name: &'static str,
    /// The file it owns.
    pub path: String,
    /// Whether the file changed (or, in a dry run, would).
    pub changed: bool,
    /// Whether the server was reloaded.
    pub reloaded: bool,
    /// Ranges added, per family.
    pub added: Value,
    /// Ranges removed, per family.
    pub removed: Value,
    /// Ranges kept.
    pub unchanged: usize,
    /// Why the file is rewritten although its ranges are right (absent, edited by hand).
    pub rebuild: Option<String>,
    /// Why it failed; the file is as it was.
    pub error: Option<String>,
}

impl Outcome {
    /// One line for the text report.
    pub fn text(&self, dry_run: bool) -> String {
        let head = format!("{} ({})", self.name, self.path);
        if let Some(e) = &self.error {
            return format!("{head}: FAILED: {e}\n");
        }
        if !self.changed {
            return format!("{head}: up to date ({} entries)\n", self.unchanged);
        }
        let count = |v: &Value| {
            ["ipv4", "ipv6"]
                .iter()
                .map(|f| v[f].as_array().map_or(0, Vec::len))
                .sum::<usize>()
        };
        let (add, remove) = (count(&self.added), count(&self.removed));
        let verb = if dry_run {
            "would change"
        } else if self.reloaded {
            "changed, reloaded"
        } else {
            "changed"
        };
        format!("{head}: {verb}: +{add} -{remove} ={}\n", self.unchanged)
    }
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// One per output, in order.
    pub outcomes: Vec<Outcome>,
    /// What the operator should know (Cloudflare addresses Fail2Ban has banned).
    pub warnings: Vec<String>,
    /// The failures, one message naming each output that failed and what the others did;
    /// `None` when none failed.
    pub failed: Option<String>,
}

impl Ran {
    /// Whether any output changed (or would).
    pub fn changed(&self) -> bool {
        self.outcomes.iter().any(|o| o.changed && o.error.is_none())
    }
}

/// Applies every planned change (a dry run: checks it), each output on its own: one failing
/// does not stop the others. Then asks the servers what the operator should know about `list`
/// (banned Cloudflare addresses); `None` (purge) asks nothing.
pub fn run(prepared: Prepared, list: Option<&AllowList>, dry_run: bool) -> Ran {
    let mut outcomes = Vec::new();
    let mut warnings = Vec::new();
    for item in &prepared.items {
        let output = &item.output;
        let (added, removed, unchanged) = match &item.change {
            Some(c) => (
                c.added(),
                c.removed(),
                c.entries_before.len() - c.removed().len(),
            ),
            None => (
                AllowList::new(),
                AllowList::new(),
                item.current.entries.len(),
            ),
        };
        let result = match &item.change {
            None => Ok(()),
            Some(c) if dry_run => output.check(c),
            Some(c) => output.apply(c),
        };
        if let Err(e) = &result {
            tracing::error!(output = output.name(), error = %e, "output failed");
        }
        let rebuild = item.change.as_ref().and_then(|_| {
            if !item.current.is_present() {
                Some("the file does not exist yet".to_string())
            } else {
                item.current.damaged.clone()
            }
        });
        outcomes.push(Outcome {
            name: output.name(),
            path: output.path().display().to_string(),
            changed: item.change.is_some(),
            reloaded: item.change.is_some() && !dry_run && result.is_ok(),
            added: crate::report::families_json(&added),
            removed: crate::report::families_json(&removed),
            unchanged,
            rebuild,
            error: result.err().map(|e| e.to_string()),
        });
        if let Some(list) = list {
            warnings.extend(output.warnings(list));
        }
    }
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            o.error
                .as_ref()
                .map(|e| format!("output {} ({}): {e}", o.name, o.path))
        })
        .collect();
    let failed = (!failures.is_empty()).then(|| {
        let others: Vec<String> = outcomes
            .iter()
            .filter(|o| o.error.is_none())
            .map(|o| {
                let what = match (o.changed, dry_run) {
                    (false, _) => "up to date",
                    (true, true) => "would change",
                    (true, false) => "changed",
                };
                format!("{} {what}", o.name)
            })
            .collect();
        let mut message = failures.join("; ");
        message.push_str(if dry_run {
            "; nothing was changed"
        } else {
            "; each failed output keeps its previous file and its server what it had loaded"
        });
        if !others.is_empty() {
            message.push_str(&format!(" (the other outputs: {})", others.join(", ")));
        }
        message
    });
    Ran {
        outcomes,
        warnings,
        failed,
    }
}

/// The Cloudflare addresses Fail2Ban has banned, as warnings (for `audit`); nothing when
/// Fail2Ban is not configured.
pub fn banned(settings: &OutputSettings, list: &AllowList) -> Vec<String> {
    match settings.build(&Runner::new()) {
        Ok(outputs) => outputs.iter().flat_map(|o| o.warnings(list)).collect(),
        Err(e) => vec![format!("outputs: {e}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::path::Path;
    use std::rc::Rc;

    fn list(items: &[&str]) -> AllowList {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// An output whose file is `entries` (absent when `None`), recording what it is asked.
    struct Fake {
        name: &'static str,
        path: PathBuf,
        entries: Option<AllowList>,
        fail: bool,
        log: Rc<RefCell<Vec<String>>>,
    }

    impl Output for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn path(&self) -> &Path {
            &self.path
        }
        fn read(&self) -> Result<Current, BackendError> {
            Ok(match &self.entries {
                None => Current::default(),
                Some(e) => Current {
                    entries: e.clone(),
                    bytes: Some(format!("{e:?}").into_bytes()),
                    damaged: None,
                },
            })
        }
        fn plan(
            &self,
            current: &Current,
            list: Option<&AllowList>,
        ) -> Result<cfa_outputs::Planned, BackendError> {
            let change = (list != self.entries.as_ref()).then(|| Change {
                path: self.path.clone(),
                before: current.bytes.clone(),
                after: list.map(|l| format!("{l:?}").into_bytes()),
                entries_before: current.entries.clone(),
                entries_after: list.cloned().unwrap_or_default(),
            });
            Ok(cfa_outputs::Planned {
                change,
                warnings: vec![],
            })
        }
        fn check(&self, _: &Change) -> Result<(), BackendError> {
            self.log.borrow_mut().push(format!("check {}", self.name));
            Ok(())
        }
        fn apply(&self, c: &Change) -> Result<(), BackendError> {
            self.log
                .borrow_mut()
                .push(format!("apply {} {}", self.name, c.entries_after.len()));
            if self.fail {
                Err(BackendError::Conflict("nginx -t failed".into()))
            } else {
                Ok(())
            }
        }
        fn warnings(&self, _: &AllowList) -> Vec<String> {
            vec![format!("{} was asked", self.name)]
        }
    }

    fn fake(
        name: &'static str,
        entries: Option<AllowList>,
        fail: bool,
        log: &Rc<RefCell<Vec<String>>>,
    ) -> Box<dyn Output> {
        Box::new(Fake {
            name,
            path: PathBuf::from(format!("/x/{name}")),
            entries,
            fail,
            log: Rc::clone(log),
        })
    }

    #[test]
    fn degraded_runs_never_shrink_an_outputs_coverage() {
        let log = Rc::new(RefCell::new(vec![]));
        let live = list(&["104.16.0.0/13", "198.41.128.0/17"]);
        let fallback = list(&["104.16.0.0/12", "173.245.48.0/20"]);
        let prepared = prepare_with(
            vec![fake("nginx", Some(live.clone()), false, &log)],
            Some(&fallback),
            true,
        )
        .unwrap();
        let change = prepared.items[0].change.as_ref().unwrap();
        assert_eq!(
            change.entries_after,
            list(&["104.16.0.0/12", "173.245.48.0/20", "198.41.128.0/17"])
        );
        for net in change.removed().iter() {
            assert!(
                change.entries_after.iter().any(|t| t.contains(&net)),
                "{net} uncovered"
            );
        }
        // Not degraded: the list as it is.
        let prepared = prepare_with(
            vec![fake("nginx", Some(live), false, &log)],
            Some(&fallback),
            false,
        )
        .unwrap();
        assert_eq!(
            prepared.items[0].change.as_ref().unwrap().entries_after,
            fallback
        );
    }

    #[test]
    fn one_output_failing_does_not_stop_the_others_and_fails_the_run() {
        let log = Rc::new(RefCell::new(vec![]));
        let cf = list(&["104.16.0.0/13", "2400:cb00::/32"]);
        let prepared = prepare_with(
            vec![
                fake("nginx", None, true, &log),
                fake("apache", None, false, &log),
                fake("fail2ban", Some(cf.clone()), false, &log),
            ],
            Some(&cf),
            false,
        )
        .unwrap();
        let ran = run(prepared, Some(&cf), false);
        assert_eq!(
            *log.borrow(),
            vec!["apply nginx 2".to_string(), "apply apache 2".to_string()]
        );
        let failed = ran.failed.clone().unwrap();
        assert!(
            failed.contains("output nginx (/x/nginx): nginx -t failed")
                && failed.contains("apache changed")
                && failed.contains("fail2ban up to date"),
            "{failed}"
        );
        assert_eq!(ran.outcomes[0].error.as_deref(), Some("nginx -t failed"));
        assert!(!ran.outcomes[0].reloaded);
        assert!(ran.outcomes[1].reloaded && ran.outcomes[1].changed);
        assert!(!ran.outcomes[2].changed);
        assert_eq!(ran.outcomes[1].added["ipv6"][0], "2400:cb00::/32");
        assert_eq!(ran.outcomes[2].unchanged, 2);
        assert_eq!(ran.warnings.len(), 3, "every server is asked");
        assert!(ran.changed());
    }

    #[test]
    fn a_dry_run_only_checks() {
        let log = Rc::new(RefCell::new(vec![]));
        let cf = list(&["104.16.0.0/13"]);
        let prepared =
            prepare_with(vec![fake("nginx", None, true, &log)], Some(&cf), false).unwrap();
        assert!(prepared.changes());
        let ran = run(prepared, Some(&cf), true);
        assert_eq!(*log.borrow(), vec!["check nginx".to_string()]);
        assert_eq!(ran.failed, None);
        assert!(ran.outcomes[0].changed && !ran.outcomes[0].reloaded);
        assert_eq!(
            ran.outcomes[0].text(true),
            "nginx (/x/nginx): would change: +1 -0 =0\n"
        );
    }

    #[test]
    fn purge_plans_removal_and_asks_no_server() {
        let log = Rc::new(RefCell::new(vec![]));
        let cf = list(&["104.16.0.0/13"]);
        let prepared = prepare_with(
            vec![
                fake("nginx", Some(cf), false, &log),
                fake("apache", None, false, &log),
            ],
            None,
            false,
        )
        .unwrap();
        let ran = run(prepared, None, false);
        assert_eq!(*log.borrow(), vec!["apply nginx 0".to_string()]);
        assert!(ran.warnings.is_empty());
        assert_eq!(ran.outcomes[0].removed["ipv4"][0], "104.16.0.0/13");
        assert!(!ran.outcomes[1].changed);
    }

    fn settings(yaml: &str) -> Result<OutputSettings, String> {
        let s: OutputSettings = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn a_named_output_is_on_with_its_defaults() {
        let s = settings("nginx:\nfail2ban: {}\n").unwrap();
        assert_eq!(s.nginx, Some(NginxSettings::default()));
        assert_eq!(s.apache, None);
        assert_eq!(
            s.fail2ban.as_ref().unwrap().dir,
            PathBuf::from("/etc/fail2ban")
        );
        assert_eq!(
            s.nginx.as_ref().unwrap().path,
            PathBuf::from("/etc/nginx/conf.d/cf-allowlist-realip.conf")
        );
        // The effective configuration reads back the same.
        let yaml = serde_saphyr::to_string(&s).unwrap();
        assert_eq!(settings(&yaml).unwrap(), s);
        assert!(settings("").unwrap().is_empty());
    }

    #[test]
    fn bad_outputs_are_refused_naming_the_key() {
        let e = |y: &str| settings(y).unwrap_err();
        assert!(e("nginx: { path: relative.conf }\n").contains("outputs.nginx.path"));
        assert!(e("apache: { reload: [] }\n").contains("outputs.apache.reload"));
        assert!(e("nginx: { test: [\"\"] }\n").contains("outputs.nginx.test"));
        assert!(e("fail2ban: { file: cf.conf }\n").contains("outputs.fail2ban.file"));
        assert!(e("fail2ban: { dir: etc/fail2ban }\n").contains("outputs.fail2ban.dir"));
        assert!(e("nginx: { pth: /x.conf }\n").contains("pth"));
        assert!(e("haproxy: {}\n").contains("haproxy"));
        assert!(
            e("nginx: { path: /etc/x.conf }\napache: { path: /etc/x.conf }\n")
                .contains("same file")
        );
    }
}
