//! Logs on stderr (stdout belongs to the stdout stores): console lines on a
//! terminal, JSON lines otherwise, colour only on a terminal, and warnings and
//! errors from one log statement rate-limited so a failing store or a flood of
//! bad input cannot fill the disk with the same line.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::cli::LogEncoding;

/// Warning and error lines one log statement may write per [`RATE_WINDOW`];
/// more are counted and reported once per window by [`take_suppressed`].
pub const RATE_BURST: u32 = 5;
/// The rate limit's window.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Lines suppressed since start, all statements together (for metrics).
static SUPPRESSED_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Per-statement state of the rate limit.
static LIMITER: Mutex<Option<HashMap<Identifier, Window>>> = Mutex::new(None);

/// One log statement's current window.
struct Window {
    start: Instant,
    written: u32,
    suppressed: u64,
    /// Where the statement is, for the summary line.
    file: &'static str,
    line: u32,
}

/// Sets up the global subscriber. `level` is a filter (`info`, `tapwire=debug`);
/// without it `RUST_LOG`, else `info`. `encoding` defaults to console on a
/// terminal and JSON otherwise.
pub fn init(level: Option<&str>, encoding: Option<LogEncoding>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let terminal = std::io::stderr().is_terminal();
    let encoding = encoding.unwrap_or(if terminal {
        LogEncoding::Console
    } else {
        LogEncoding::Json
    });
    Registry::default()
        .with(filter)
        .with(layer(encoding, terminal, std::io::stderr).with_filter(RateLimit))
        .init();
}

/// The formatting layer for `encoding`, writing to `writer`.
fn layer<W>(
    encoding: LogEncoding,
    ansi: bool,
    writer: W,
) -> Box<dyn Layer<tracing_subscriber::layer::Layered<EnvFilter, Registry>> + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    match encoding {
        LogEncoding::Console => fmt.with_ansi(ansi).boxed(),
        LogEncoding::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    }
}

/// Lines suppressed by the rate limit since start.
pub fn suppressed_total() -> u64 {
    SUPPRESSED_TOTAL.load(Ordering::Relaxed)
}

/// Log statements whose window has ended with lines suppressed: `(file, line,
/// count)`. Their windows restart. Called now and then by the agent, which logs
/// one summary line per statement.
pub fn take_suppressed() -> Vec<(&'static str, u32, u64)> {
    let mut guard = LIMITER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(map) = guard.as_mut() else {
        return Vec::new();
    };
    let now = Instant::now();
    let mut out = Vec::new();
    for window in map.values_mut() {
        if window.suppressed > 0 && now.duration_since(window.start) >= RATE_WINDOW {
            out.push((window.file, window.line, window.suppressed));
            window.suppressed = 0;
        }
    }
    map.retain(|_, w| now.duration_since(w.start) < RATE_WINDOW || w.suppressed > 0);
    out
}

/// Logs one line per statement whose lines were suppressed in its last window.
pub fn log_suppressed() {
    for (file, line, suppressed) in take_suppressed() {
        tracing::warn!(file, line, suppressed, "repeated log lines suppressed");
    }
}

/// Lets at most [`RATE_BURST`] warnings or errors per statement through per window.
struct RateLimit;

impl RateLimit {
    fn allow(meta: &'static Metadata<'static>) -> bool {
        if *meta.level() > Level::WARN {
            return true;
        }
        let mut guard = LIMITER.lock().unwrap_or_else(|e| e.into_inner());
        let map = guard.get_or_insert_with(HashMap::new);
        let now = Instant::now();
        let window = map.entry(meta.callsite()).or_insert_with(|| Window {
            start: now,
            written: 0,
            suppressed: 0,
            file: meta.file().unwrap_or(meta.target()),
            line: meta.line().unwrap_or(0),
        });
        if now.duration_since(window.start) >= RATE_WINDOW {
            window.start = now;
            window.written = 0;
        }
        if window.written < RATE_BURST {
            window.written += 1;
            return true;
        }
        window.suppressed += 1;
        SUPPRESSED_TOTAL.fetch_add(1, Ordering::Relaxed);
        false
    }
}

impl<S: Subscriber> Filter<S> for RateLimit {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &Context<'_, S>) -> bool {
        Self::allow(event.metadata())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A writer collecting what the layer writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Buf {
        type Writer = Buf;
        fn make_writer(&'w self) -> Buf {
            self.clone()
        }
    }

    fn capture(encoding: LogEncoding, body: impl Fn()) -> String {
        let buf = Buf::default();
        let subscriber = Registry::default()
            .with(EnvFilter::new("info"))
            .with(layer(encoding, false, buf.clone()).with_filter(RateLimit));
        tracing::subscriber::with_default(subscriber, body);
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn repeated_warnings_from_one_statement_are_rate_limited() {
        let before = suppressed_total();
        let out = capture(LogEncoding::Console, || {
            for attempt in 0..20 {
                tracing::warn!(attempt, "upload failed");
            }
            for n in 0..3 {
                tracing::info!(n, "not limited");
            }
        });
        assert_eq!(
            out.matches("upload failed").count(),
            RATE_BURST as usize,
            "{out}"
        );
        assert_eq!(out.matches("not limited").count(), 3, "{out}");
        assert!(suppressed_total() - before >= 15);
        assert!(
            !out.contains('\u{1b}'),
            "no colour without a terminal: {out}"
        );
    }

    #[test]
    fn json_lines_carry_level_message_and_fields() {
        let out = capture(LogEncoding::Json, || {
            tracing::info!(readers = 2, "capture ready");
        });
        let line: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "capture ready");
        assert_eq!(line["readers"], 2);
        assert!(line["timestamp"].is_string(), "{line}");
    }
}
