//! Resource use of the current process, from `getrusage(2)`.
#![allow(unsafe_code)]

/// CPU time and peak memory of the process so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// User + system CPU seconds, all threads.
    pub cpu_s: f64,
    /// Peak resident set size in MB.
    pub peak_rss_mb: f64,
}

/// The resource use of this process so far (zeros if the call fails, which it does not on Linux).
pub fn process_usage() -> ProcessUsage {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory of the right size for one `rusage`, and
    // RUSAGE_SELF is a valid `who`; the kernel fills the struct or returns -1.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return ProcessUsage {
            cpu_s: 0.0,
            peak_rss_mb: 0.0,
        };
    }
    // SAFETY: getrusage returned 0, so the struct was written; a zeroed rusage is valid anyway.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    ProcessUsage {
        cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = process_usage();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = process_usage();
        assert!(after.cpu_s > before.cpu_s, "{before:?} -> {after:?}");
        assert!(after.peak_rss_mb > 0.5, "{after:?}");
    }
}
