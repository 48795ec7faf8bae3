//! CPU time of the process and of one thread, for benchmarks.
#![allow(unsafe_code)]

use std::time::Duration;

/// CPU time (user plus system) the whole process has used so far, from
/// `getrusage(RUSAGE_SELF)`; `None` if the call fails or the platform lacks it.
#[cfg(unix)]
pub fn process_cpu_time() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` points to writable memory of the right type and size; getrusage only
    // writes into it and reports failure by its return value.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled the whole struct (and it was zeroed before).
    let usage = unsafe { usage.assume_init() };
    let time = |tv: libc::timeval| {
        Duration::from_secs(tv.tv_sec.max(0) as u64)
            + Duration::from_micros(tv.tv_usec.max(0) as u64)
    };
    Some(time(usage.ru_utime) + time(usage.ru_stime))
}

/// CPU time (user plus system) the whole process has used so far; not available here.
#[cfg(not(unix))]
pub fn process_cpu_time() -> Option<Duration> {
    None
}

/// CPU time of a running thread, from its CPU-time clock.
#[cfg(target_os = "linux")]
pub(crate) fn thread_cpu_time(thread: &std::thread::JoinHandle<()>) -> Option<Duration> {
    use std::os::unix::thread::JoinHandleExt;

    let handle = thread.as_pthread_t();
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the caller checked that the thread has not finished, and the JoinHandle keeps it
    // from being detached, so `handle` names a live (or joinable) thread; `clock` is a valid
    // out pointer.
    if unsafe { libc::pthread_getcpuclockid(handle, &mut clock) } != 0 {
        return None;
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock` came from pthread_getcpuclockid and `now` is a valid out pointer.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    ))
}

/// CPU time of a running thread; not available here.
#[cfg(not(target_os = "linux"))]
pub(crate) fn thread_cpu_time(_thread: &std::thread::JoinHandle<()>) -> Option<Duration> {
    None
}
