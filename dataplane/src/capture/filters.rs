//! `tap.filters`: processes left out of capture, wholly or in part, by the path
//! of their executable — Qtap's exclusion filters.
//!
//! The decision is made once per program, in user space (which knows the
//! executable's path; the probes see only an inode), when the program starts:
//! at its exec record, on a thread that does nothing else (see
//! `spawn_filter_thread`), or at agent start for processes already running.
//! It is written into the probes' `FILTERED` map, which children inherit at
//! fork, so the payload of a left-out process is never copied into a ring.
//! Between an exec and the decision reaching the kernel a connection may
//! already be tracked; its events are dropped in user space (see
//! [`super::procs::ProcessTable::skip`]) and counted.
//!
//! First matching entry wins, as in Qtap: `custom` entries in file order, then
//! the executables of the `groups`.

use tapwire_common::config::skip;

use crate::config::{CustomFilter, Filters, GroupFilter, Layer, MatchStrategy};
use crate::plugins::{PathStep, Refusal};

/// The compiled `tap.filters`.
#[derive(Debug, Clone, Default)]
pub struct ProcessFilters {
    rules: Vec<Rule>,
    /// `qpoint` was named (the agent is left out whatever the file says).
    names_qpoint: bool,
}

/// One compiled entry.
#[derive(Debug, Clone)]
struct Rule {
    matcher: Matcher,
    /// `config::skip` bits; 0 when the entry skips nothing tapwire captures
    /// (`only: [dns]`).
    skip: u32,
    /// Where it came from, for the plan summary.
    source: String,
}

/// How an entry's `exe` is compared with an executable's path. Patterns of
/// the case-insensitive strategies are kept lowercased.
#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(regex::Regex),
}

impl Matcher {
    fn matches(&self, path: &str, lower: &str) -> bool {
        match self {
            Self::Exact(p) => lower == p,
            Self::Prefix(p) => lower.starts_with(p.as_str()),
            Self::Suffix(p) => lower.ends_with(p.as_str()),
            Self::Contains(p) => lower.contains(p.as_str()),
            Self::Regex(re) => re.is_match(path),
        }
    }
}

/// Qtap's executables of each group (compared exactly).
fn group_exes(group: GroupFilter) -> &'static [&'static str] {
    match group {
        // The agent's own process is left out by the probes themselves.
        GroupFilter::Qpoint => &[],
        GroupFilter::Kubernetes => &[
            "/home/kubernetes/bin/kubelet",
            "/home/kubernetes/bin/kube-proxy",
            "/proxy-agent",
            "/cluster-proportional-autoscaler",
            "/csi-node-driver-registrar",
        ],
        GroupFilter::ContainerRuntimes => {
            &["/usr/bin/containerd", "/usr/bin/dockerd", "/usr/bin/runc"]
        }
        GroupFilter::Gke => &[
            "/home/kubernetes/bin/gcfsd",
            "/event-exporter",
            "/fluent-bit-gke-exporter",
            "/home/kubernetes/bin/node-problem-detector",
        ],
        GroupFilter::Eks => &[
            "/app/aws-k8s-agent",
            "/usr/bin/amazon-ssm-agent",
            "/usr/bin/ssm-agent-worker",
            "/usr/bin/ssm-document-worker",
        ],
    }
}

/// The `config::skip` bits of an entry's `only` (omitted: the whole process).
fn skip_bits(only: Option<&[Layer]>) -> u32 {
    let Some(layers) = only else {
        return skip::PROCESS;
    };
    layers.iter().fold(0, |bits, layer| {
        bits | match layer {
            // Payload feeds only the HTTP layer here: skipping either keeps
            // the connection and drops its bytes.
            Layer::Data | Layer::Http => skip::PAYLOAD,
            Layer::Tls => skip::TLS,
            // No DNS capture: nothing to skip.
            Layer::Dns => 0,
        }
    })
}

fn describe_skip(bits: u32) -> &'static str {
    if bits & skip::PROCESS != 0 {
        "process"
    } else if bits & skip::PAYLOAD != 0 {
        // PAYLOAD covers TLS plaintext too.
        "payload"
    } else if bits & skip::TLS != 0 {
        "tls"
    } else {
        "nothing"
    }
}

impl ProcessFilters {
    /// Compiles `tap.filters`; a bad regex or an empty `only` is refused with
    /// its location.
    pub fn compile(filters: &Filters) -> Result<Self, Refusal> {
        let at = |i: usize, key: &str| {
            ["tap", "filters", "custom"]
                .into_iter()
                .map(|k| PathStep::Key(k.to_owned()))
                .chain([PathStep::Index(i), PathStep::Key(key.to_owned())])
                .collect::<Vec<_>>()
        };
        let mut rules = Vec::new();
        for (i, f) in filters.custom.iter().enumerate() {
            if f.only.as_ref().is_some_and(Vec::is_empty) {
                return Err(Refusal {
                    path: at(i, "only"),
                    at_key: false,
                    message: "empty list: name the layers to skip (`data`, `tls`, `http`, `dns`), \
                              or leave `only` out to skip the whole process"
                        .to_owned(),
                });
            }
            let matcher = custom_matcher(f).map_err(|message| Refusal {
                path: at(i, "exe"),
                at_key: false,
                message,
            })?;
            rules.push(Rule {
                matcher,
                skip: skip_bits(f.only.as_deref()),
                source: format!("custom[{i}] {} `{}`", strategy_name(f.strategy), f.exe),
            });
        }
        for group in &filters.groups {
            for exe in group_exes(*group) {
                rules.push(Rule {
                    matcher: Matcher::Exact(exe.to_lowercase()),
                    skip: skip::PROCESS,
                    source: format!("group {} exact `{exe}`", group.name()),
                });
            }
        }
        Ok(Self {
            rules,
            names_qpoint: filters.groups.contains(&GroupFilter::Qpoint),
        })
    }

    /// True when no entry can match.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The `config::skip` bits for a program at `path` (0: captured in full).
    pub fn skip(&self, path: &str) -> u32 {
        if self.rules.is_empty() {
            return 0;
        }
        let lower = path.to_lowercase();
        self.rules
            .iter()
            .find(|r| r.matcher.matches(path, &lower))
            .map_or(0, |r| r.skip)
    }

    /// One line per entry, in match order, for `check-config`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        if self.names_qpoint {
            out.push_str("  group qpoint: the agent itself (always left out)\n");
        }
        for r in &self.rules {
            out.push_str(&format!(
                "  {} -> skip {}\n",
                r.source,
                describe_skip(r.skip)
            ));
        }
        if out.is_empty() {
            out.push_str("  none\n");
        }
        out
    }
}

fn strategy_name(s: MatchStrategy) -> &'static str {
    match s {
        MatchStrategy::Exact => "exact",
        MatchStrategy::Prefix => "prefix",
        MatchStrategy::Suffix => "suffix",
        MatchStrategy::Contains => "contains",
        MatchStrategy::Regex => "regex",
    }
}

fn custom_matcher(f: &CustomFilter) -> Result<Matcher, String> {
    if f.exe.is_empty() {
        return Err("empty: name an executable path or pattern".to_owned());
    }
    let lower = f.exe.to_lowercase();
    Ok(match f.strategy {
        MatchStrategy::Exact => Matcher::Exact(lower),
        MatchStrategy::Prefix => Matcher::Prefix(lower),
        MatchStrategy::Suffix => Matcher::Suffix(lower),
        MatchStrategy::Contains => Matcher::Contains(lower),
        MatchStrategy::Regex => {
            let re = regex::Regex::new(&f.exe).map_err(|e| match e {
                // The last line of the parser's report says what is wrong.
                regex::Error::Syntax(text) => format!(
                    "not a regular expression: {}",
                    text.lines()
                        .last()
                        .unwrap_or_default()
                        .trim()
                        .trim_start_matches("error: ")
                ),
                other => format!("not a usable regular expression: {other}"),
            })?;
            Matcher::Regex(re)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(yaml: &str) -> Result<ProcessFilters, Refusal> {
        let f: Filters = serde_yaml::from_str(yaml).unwrap();
        ProcessFilters::compile(&f)
    }

    #[test]
    fn strategies_match_as_qtap_does() {
        let f = filters(
            r#"
custom:
  - {exe: /usr/bin/CURL, strategy: exact}
  - {exe: /opt/App/, strategy: prefix}
  - {exe: /wget}
  - {exe: python, strategy: contains, only: [http]}
  - {exe: '^/srv/[a-z]+d$', strategy: regex, only: [tls]}
  - {exe: dig, strategy: suffix, only: [dns]}
"#,
        )
        .unwrap();
        assert_eq!(f.skip("/usr/bin/curl"), skip::PROCESS);
        assert_eq!(f.skip("/usr/bin/curl2"), 0);
        assert_eq!(f.skip("/opt/app/bin/x"), skip::PROCESS);
        assert_eq!(f.skip("/usr/local/bin/WGET"), skip::PROCESS);
        assert_eq!(f.skip("/usr/bin/wget2"), 0);
        assert_eq!(f.skip("/usr/bin/Python3.11"), skip::PAYLOAD);
        assert_eq!(f.skip("/srv/httpd"), skip::TLS);
        // Regex is case-sensitive.
        assert_eq!(f.skip("/srv/HTTPD"), 0);
        assert_eq!(f.skip("/usr/bin/dig"), 0);
        assert_eq!(f.skip("/bin/sh"), 0);
    }

    #[test]
    fn first_match_wins_and_groups_follow_custom() {
        let f = filters(
            r#"
groups: [container, qpoint]
custom:
  - {exe: containerd, only: [data]}
"#,
        )
        .unwrap();
        assert_eq!(f.skip("/usr/bin/containerd"), skip::PAYLOAD);
        assert_eq!(f.skip("/usr/bin/runc"), skip::PROCESS);
        assert_eq!(f.skip("/usr/local/bin/runc"), 0);
        let text = f.describe();
        assert!(text.contains("group qpoint"), "{text}");
        assert!(
            text.contains("group container-runtimes exact `/usr/bin/dockerd` -> skip process"),
            "{text}"
        );
        assert!(
            text.contains("custom[0] suffix `containerd` -> skip payload"),
            "{text}"
        );
    }

    #[test]
    fn bad_entries_are_refused_at_their_key() {
        let err = filters("custom: [{exe: 'a(b', strategy: regex}]").unwrap_err();
        assert_eq!(
            err.path,
            vec![
                PathStep::Key("tap".into()),
                PathStep::Key("filters".into()),
                PathStep::Key("custom".into()),
                PathStep::Index(0),
                PathStep::Key("exe".into())
            ]
        );
        assert!(
            err.message.starts_with("not a regular expression"),
            "{}",
            err.message
        );
        let err = filters("custom: [{exe: x}, {exe: y, only: []}]").unwrap_err();
        assert_eq!(err.path[3], PathStep::Index(1));
        assert_eq!(err.path[4], PathStep::Key("only".into()));
        assert!(filters("custom: [{exe: ''}]").is_err());
    }
}
