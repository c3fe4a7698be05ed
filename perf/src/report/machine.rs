//! The machine the numbers come from.

use std::time::{SystemTime, UNIX_EPOCH};

/// CPU, cores, kernel, host and date.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Host name.
    pub host: String,
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// UTC time, `HH:MM`.
    pub time: String,
}

impl Machine {
    /// Reads it from `/proc`.
    pub fn detect() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into())
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (y, m, d) = tapwire_store::calendar::civil_from_days(secs / 86_400);
        let tod = secs % 86_400;
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease"),
            host: read("/proc/sys/kernel/hostname"),
            date: format!("{y:04}-{m:02}-{d:02}"),
            time: format!("{:02}:{:02}", tod / 3600, tod % 3600 / 60),
        }
    }
}
