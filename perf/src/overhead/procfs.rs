//! What `/proc` tells about CPU time and memory.

use std::path::PathBuf;

/// Clock ticks per second of `/proc` CPU times (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Fields of `/proc/PID/stat` after the `(comm)`, which may contain spaces.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // Field 3 (state) is a letter; keep positions by mapping it to 0.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime of a process (all its threads), in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    // Fields 14 and 15 of stat(5); `f` starts at field 3.
    Some(f.get(11)? + f.get(12)?)
}

/// cutime + cstime: CPU of the children it has waited for, in ticks.
pub fn children_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(13)? + f.get(14)?)
}

/// Parent pid.
pub fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1).map(|&p| p as u32)
}

/// `root` and every process whose parent is `root` (one level: nginx's workers).
pub fn with_children(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok())
                && ppid(pid) == Some(root)
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Sum of [`cpu_ticks`] over `pids` (gone ones count 0).
pub fn sum_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| cpu_ticks(p)).sum()
}

/// Busy ticks of the whole machine (all CPUs): total minus idle and iowait.
pub fn machine_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

/// CPU ticks per thread group of a process: threads named alike (`shard-0`,
/// `shard-1`) are summed under the name without its trailing number.
pub fn thread_ticks(pid: u32) -> Vec<(String, u64)> {
    let mut groups: Vec<(String, u64)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close]
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .trim_end_matches(['-', '_'])
            .to_owned();
        let f: Vec<u64> = stat[close + 2..]
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, t)) => *t += ticks,
            None => groups.push((name, ticks)),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    groups
}

/// `now` less `then`, per thread group (`thread_ticks` read twice), groups
/// that spent nothing in between left out, largest first.
pub fn ticks_since(now: Vec<(String, u64)>, then: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut spent: Vec<(String, u64)> = now
        .into_iter()
        .map(|(name, ticks)| {
            let before = then.iter().find(|(n, _)| *n == name).map_or(0, |t| t.1);
            (name, ticks.saturating_sub(before))
        })
        .filter(|(_, ticks)| *ticks > 0)
        .collect();
    spent.sort_by_key(|g| std::cmp::Reverse(g.1));
    spent
}

/// Peak resident set size (`VmHWM`), KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The `libssl.so*` a process maps, if any.
pub fn libssl_of(pid: u32) -> Option<PathBuf> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with("libssl.so"))
        })
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_cpu_time_and_memory() {
        let me = std::process::id();
        let spin = std::time::Instant::now();
        while spin.elapsed().as_millis() < 30 {
            std::hint::black_box(0u64);
        }
        assert!(cpu_ticks(me).is_some());
        assert!(vm_hwm_kib(me).unwrap() > 0);
        assert_eq!(ppid(me), Some(std::os::unix::process::parent_id()));
        assert!(machine_busy_ticks() > 0);
    }

    #[test]
    fn ticks_since_counts_only_what_each_thread_group_spent_in_between() {
        let then = [("tapwire".to_owned(), 90), ("shard".to_owned(), 5)];
        let now = vec![
            ("tapwire".to_owned(), 91),
            ("shard".to_owned(), 40),
            ("ring".to_owned(), 7),
            ("status".to_owned(), 0),
        ];
        assert_eq!(
            ticks_since(now, &then),
            [
                ("shard".to_owned(), 35),
                ("ring".to_owned(), 7),
                ("tapwire".to_owned(), 1)
            ]
        );
    }
}
