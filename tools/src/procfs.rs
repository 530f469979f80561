//! A process's CPU time and memory, read from `/proc` (Linux only).
//!
//! Used for the directory child process (its RSS is the figure that matters) and for the
//! load generator's own process. Peak RSS (`VmHWM`) can be reset between scenarios by
//! writing `5` to `/proc/PID/clear_refs`, so each scenario reports its own peak.

use std::time::Duration;

/// What `/proc` says about one process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size since start or the last [`reset_peak`], KiB.
    pub peak_kib: u64,
    /// User + system CPU time used so far.
    pub cpu: Duration,
}

/// Reads RSS, peak RSS and CPU time of `pid`.
pub fn read(pid: u32) -> std::io::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces):
    // state is field 3, utime field 14, stime field 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = clock_ticks_per_sec();
    let cpu_ticks = ticks(11) + ticks(12);
    Ok(ProcStats {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
        cpu: Duration::from_secs_f64(cpu_ticks as f64 / hz as f64),
    })
}

/// Resets the peak RSS of `pid` to its current RSS.
pub fn reset_peak(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as u64 } else { 100 }
}

/// CPU and peak memory of one process over one stretch of time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU seconds used during the stretch.
    pub cpu: Duration,
    /// Peak RSS during the stretch, KiB.
    pub peak_kib: u64,
    /// RSS at its end, KiB.
    pub rss_kib: u64,
}

/// Measures one process from [`Meter::start`] to [`Meter::stop`].
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    pid: u32,
    start: ProcStats,
}

impl Meter {
    /// Resets the process's peak RSS and notes its CPU time so far.
    pub fn start(pid: u32) -> Self {
        let _ = reset_peak(pid);
        Self {
            pid,
            start: read(pid).unwrap_or_default(),
        }
    }

    /// CPU used and peak RSS since [`Meter::start`].
    pub fn stop(&self) -> Usage {
        let now = read(self.pid).unwrap_or_default();
        Usage {
            cpu: now.cpu.saturating_sub(self.start.cpu),
            peak_kib: now.peak_kib,
            rss_kib: now.rss_kib,
        }
    }
}
