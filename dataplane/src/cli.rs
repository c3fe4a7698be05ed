//! Command-line interface: runtime settings only. What to capture and where to
//! store it lives in the YAML config; the selection flags narrow capture to chosen
//! processes for targeted use and tests.
//!
//! Each setting also has a `TAPWIRE_*` environment variable, and Qtap's names work
//! as aliases (`QPOINT_CONFIG`, `LOG_LEVEL`, `LOG_ENCODING`), so a Qtap
//! deployment's environment carries over. A flag wins over either variable; the
//! `TAPWIRE_*` name wins over Qtap's.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// `tapwire --version`: the crate version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TAPWIRE_GIT_COMMIT"),
    ")"
);

const EXAMPLES: &str = "\
Examples:
  tapwire                                   events and objects of every process to stdout
  tapwire --config /etc/tapwire/qpoint.yaml your Qtap config (stores, filters)
  tapwire --pid 1234                        only process 1234 and its children
  tapwire --exe /usr/bin/curl --exe /usr/sbin/nginx
  tapwire check-config qpoint.yaml          validate a config without privileges
  tapwire reload-config                     the running agent re-reads its config
  curl -s 127.0.0.1:10001/metrics           Prometheus metrics (also /healthz, /readyz)

Environment (a flag wins; TAPWIRE_* wins over Qtap's name):
  TAPWIRE_CONFIG, QPOINT_CONFIG             --config
  TAPWIRE_LOG, LOG_LEVEL, RUST_LOG          --log-level
  TAPWIRE_LOG_ENCODING, LOG_ENCODING        --log-encoding
  TAPWIRE_HTTPD_LISTEN, HTTPD_LISTEN        --httpd-listen

tapwire needs root, or CAP_BPF and CAP_PERFMON (see docs/operations.md).";

/// tapwire: every HTTP(S) exchange of every process on this node, via eBPF.
#[derive(Debug, Parser)]
#[command(
    name = "tapwire",
    version = VERSION,
    about,
    long_about = "tapwire: every HTTP(S) exchange of every process on this node, via eBPF.\n\n\
        HTTPS is read in plaintext inside the TLS library (uprobes), plaintext HTTP from \
        socket syscalls (tracepoints). Events (metadata) go to the config's event stores, \
        objects (headers and bodies) to its object stores. Without a subcommand the agent \
        runs until SIGINT or SIGTERM; SIGHUP makes it re-read the config.",
    after_long_help = EXAMPLES
)]
pub struct Cli {
    /// qpoint.yaml (version 2) to run with; default: the embedded config: every
    /// HTTP transaction recorded in full, events and objects to stdout.
    ///
    /// Example: `--config /etc/tapwire/qpoint.yaml`. Also `TAPWIRE_CONFIG` or
    /// Qtap's `QPOINT_CONFIG`.
    #[arg(long, short = 'c', env = "TAPWIRE_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Log filter for stderr: `error`, `warn`, `info` (default), `debug`, `trace`.
    ///
    /// Accepts `tracing` filter directives too, e.g. `--log-level info,tapwire::capture=debug`.
    /// Also `TAPWIRE_LOG`, Qtap's `LOG_LEVEL`, or `RUST_LOG`.
    #[arg(long, env = "TAPWIRE_LOG", global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Log line format on stderr: `console` (default on a terminal) or `json`
    /// (default otherwise: one JSON object per line).
    ///
    /// Example: `--log-encoding json`. Colour is used only on a terminal. Also
    /// `TAPWIRE_LOG_ENCODING` or Qtap's `LOG_ENCODING`.
    #[arg(
        long,
        env = "TAPWIRE_LOG_ENCODING",
        global = true,
        value_name = "ENCODING"
    )]
    pub log_encoding: Option<LogEncoding>,

    /// Address of the status server: `GET /healthz`, `/readyz`, `/metrics`
    /// (Prometheus); `off` disables it. Default: `127.0.0.1:10001`.
    ///
    /// Example: `--httpd-listen 0.0.0.0:10001` to let a Kubernetes probe or
    /// Prometheus reach it; port 0 picks a free port (logged). Also
    /// `TAPWIRE_HTTPD_LISTEN` or Qtap's `HTTPD_LISTEN`.
    #[arg(
        long,
        env = "TAPWIRE_HTTPD_LISTEN",
        global = true,
        value_name = "ADDR",
        value_parser = parse_listen
    )]
    pub httpd_listen: Option<Listen>,

    /// Capture only this process and its descendants (repeatable).
    ///
    /// Example: `--pid 1234 --pid 5678`. Processes started later by these are
    /// captured too.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Capture only processes running this executable (repeatable).
    ///
    /// Example: `--exe /usr/bin/curl`. Matches the resolved path of the
    /// process's executable.
    #[arg(long = "exe", value_name = "PATH")]
    pub exes: Vec<PathBuf>,

    /// Capture only processes in this cgroup v2 directory or below (repeatable).
    ///
    /// Example: `--cgroup /sys/fs/cgroup/system.slice/nginx.service`.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,

    /// Shard threads (HTTP parsing); default: one per CPU.
    ///
    /// Example: `--shards 2`.
    #[arg(long, value_name = "N", global = true)]
    pub shards: Option<usize>,

    /// Bytes of each CPU's ring buffer (a power of two, at least 4096). One
    /// probe hit can emit up to 8 MiB while the reader cannot run; smaller
    /// rings overflow sooner (counted as `ring_full`).
    #[arg(long, value_name = "BYTES", env = "TAPWIRE_RING_BYTES", global = true,
          default_value_t = crate::capture::loader::RING_BYTES_PER_CPU)]
    pub ring_bytes: u32,

    /// A record that brings a ring past 1/N full wakes its reader at once;
    /// below that the reader finds records on its poll timer.
    #[arg(long, value_name = "N", env = "TAPWIRE_WAKE_DIVISOR", global = true,
          default_value_t = crate::capture::loader::WAKE_DIVISOR)]
    pub wake_divisor: u32,

    /// Graceful overload: once a ring is more than this percent full, the
    /// probes copy only the first 4 KiB of each call and count the rest
    /// (heads are kept, bodies skipped by their length); 100 turns it off.
    #[arg(long, value_name = "PERCENT", env = "TAPWIRE_OVERLOAD_PERCENT", global = true,
          default_value_t = crate::capture::loader::OVERLOAD_PERCENT,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub overload_percent: u32,

    /// Probe TLS calls with uprobe sessions where the kernel has them (Linux
    /// 6.13+): a process outside the selection then pays one probe hit per
    /// TLS call instead of two traps. `off` probes with a uprobe and a
    /// uretprobe, as on older kernels.
    #[arg(long, value_name = "on|off", env = "TAPWIRE_UPROBE_SESSIONS", global = true,
          default_value = "on", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub uprobe_sessions: bool,

    /// Print every raw ring record as one NDJSON line on stdout instead of
    /// parsing HTTP and running the stores (for inspecting what the probes see).
    #[arg(long, env = "TAPWIRE_DEBUG_CAPTURE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub print_records: bool,

    /// Bytes the data plane may buffer (e.g. `128MiB`); overrides
    /// `tapwire.memory_budget` in the config. Default 128 MiB.
    ///
    /// Example: `--memory-budget 512MiB` on a busy node; fewer shards start if
    /// the budget cannot hold their queues.
    #[arg(long, value_name = "SIZE", env = "TAPWIRE_MEMORY_BUDGET")]
    pub memory_budget: Option<crate::config::ByteSize>,

    /// A subcommand; without one, the agent runs.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where the status server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// This address.
    At(std::net::SocketAddr),
    /// No status server.
    Off,
}

impl Listen {
    /// The address, unless the server is off.
    pub fn addr(self) -> Option<std::net::SocketAddr> {
        match self {
            Listen::At(addr) => Some(addr),
            Listen::Off => None,
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen::At(
            crate::status::DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
        )
    }
}

/// `HOST:PORT` (IP literal) or `off`.
fn parse_listen(value: &str) -> Result<Listen, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(Listen::Off);
    }
    value.parse().map(Listen::At).map_err(|_| {
        format!("`{value}` is not an address like `127.0.0.1:10001` or `[::1]:10001`, or `off`")
    })
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogEncoding {
    /// Human-readable lines, coloured on a terminal.
    Console,
    /// One JSON object per line (`timestamp`, `level`, `message`, fields, `target`).
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the plan start-up would build from a config file and the command
    /// line, print it (stores with secrets masked, capture, HTTP handling,
    /// sizes), and exit. Accepts exactly what start-up accepts; needs no
    /// privileges and reads no secrets.
    ///
    /// Exit code 0 when valid, 2 with `FILE:LINE:COL: path: message` on stderr
    /// when not. Example: `tapwire check-config /etc/tapwire/qpoint.yaml`.
    CheckConfig {
        /// The qpoint.yaml file to check.
        file: PathBuf,
    },
    /// Make the running agent re-read its config (as SIGHUP does) and print the
    /// outcome.
    ///
    /// Reaches the agent through its status server on this host (the address of
    /// `--httpd-listen`; `0.0.0.0:P` is reached as `127.0.0.1:P`). Exit code 0
    /// when the new config is running, 1 when it was refused (the old one keeps
    /// running; the message gives `FILE:LINE:COL`). Without a status server,
    /// `kill -HUP PID` does the same. Example: `tapwire reload-config`.
    ReloadConfig,
}

/// Qtap's environment names and the flag each stands for.
const QTAP_ALIASES: &[(&str, &str)] = &[
    ("QPOINT_CONFIG", "TAPWIRE_CONFIG"),
    ("LOG_LEVEL", "TAPWIRE_LOG"),
    ("LOG_ENCODING", "TAPWIRE_LOG_ENCODING"),
    ("HTTPD_LISTEN", "TAPWIRE_HTTPD_LISTEN"),
];

impl Cli {
    /// Parses the command line and the environment, Qtap's names included.
    pub fn parse_with_aliases() -> Self {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let mut cli = Cli::parse();
        cli.apply_aliases(|name| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|err| err.exit());
        cli
    }

    /// Fills settings left unset by flags and `TAPWIRE_*` from Qtap's variables.
    pub fn apply_aliases(
        &mut self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<(), clap::Error> {
        // A `TAPWIRE_*` variable already reached clap; only an unset setting
        // takes Qtap's name.
        let unset = |ours: &str| var(ours).is_none();
        for (qtap, ours) in QTAP_ALIASES {
            let Some(value) = var(qtap).filter(|_| unset(ours)) else {
                continue;
            };
            let invalid = |e: String| {
                clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!("invalid value `{value}` in `{qtap}`: {e}\n"),
                )
            };
            match *ours {
                "TAPWIRE_CONFIG" if self.config.is_none() => self.config = Some(value.into()),
                "TAPWIRE_LOG" if self.log_level.is_none() => self.log_level = Some(value),
                "TAPWIRE_LOG_ENCODING" if self.log_encoding.is_none() => {
                    self.log_encoding = Some(LogEncoding::from_str(&value, true).map_err(invalid)?);
                }
                "TAPWIRE_HTTPD_LISTEN" if self.httpd_listen.is_none() => {
                    self.httpd_listen = Some(parse_listen(&value).map_err(invalid)?);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Cli, clap::Error> {
        let mut cli = Cli::try_parse_from(std::iter::once("tapwire").chain(args.iter().copied()))?;
        cli.apply_aliases(|name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })?;
        Ok(cli)
    }

    #[test]
    fn qtap_names_fill_unset_settings() {
        let cli = with_env(
            &[],
            &[
                ("QPOINT_CONFIG", "/etc/qpoint.yaml"),
                ("LOG_LEVEL", "debug"),
                ("LOG_ENCODING", "json"),
                ("HTTPD_LISTEN", "0.0.0.0:9999"),
            ],
        )
        .unwrap();
        assert_eq!(
            cli.httpd_listen,
            Some(Listen::At("0.0.0.0:9999".parse().unwrap()))
        );
        assert_eq!(cli.config, Some(PathBuf::from("/etc/qpoint.yaml")));
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
        assert_eq!(cli.log_encoding, Some(LogEncoding::Json));
    }

    #[test]
    fn flags_and_tapwire_names_win_over_qtap_names() {
        let cli = with_env(
            &["--config", "/a.yaml", "--log-encoding", "console"],
            &[("QPOINT_CONFIG", "/b.yaml"), ("LOG_ENCODING", "json")],
        )
        .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("/a.yaml")));
        assert_eq!(cli.log_encoding, Some(LogEncoding::Console));
        // `TAPWIRE_LOG` set (clap read it) keeps `LOG_LEVEL` out.
        let cli = with_env(&[], &[("TAPWIRE_LOG", "warn"), ("LOG_LEVEL", "debug")]).unwrap();
        assert_eq!(cli.log_level, None);
    }

    #[test]
    fn the_status_server_can_be_turned_off_and_bad_addresses_are_refused() {
        let cli = with_env(&["--httpd-listen", "off"], &[]).unwrap();
        assert_eq!(cli.httpd_listen, Some(Listen::Off));
        let err = with_env(&["--httpd-listen", "localhost"], &[]).unwrap_err();
        assert!(
            err.to_string().contains("`localhost` is not an address"),
            "{err}"
        );
        assert_eq!(
            Listen::default().addr(),
            Some("127.0.0.1:10001".parse().unwrap())
        );
    }

    #[test]
    fn a_bad_qtap_value_names_the_variable() {
        let err = with_env(&[], &[("LOG_ENCODING", "xml")]).unwrap_err();
        assert!(err.to_string().contains("`LOG_ENCODING`"), "{err}");
    }
}
