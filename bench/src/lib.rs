//! Shared helpers of the benchmarks: statistics, local namespaced test hosts, process
//! measurement, the side-by-side job in three tools, and the tools' setup.
// Benchmark reports are printed by design and hold no secrets of a cluster.
#![allow(clippy::disallowed_macros, clippy::disallowed_methods)]

pub mod fleet;
pub mod measure;
pub mod tools;
pub mod workload;

use std::time::Duration;

/// Median of a non-empty sample.
pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

static TERM_FROM: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_term(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let pid = unsafe { (*info).si_pid() };
    TERM_FROM.store(pid, std::sync::atomic::Ordering::SeqCst);
}

/// Benchmarks run for many minutes on a shared machine where something else has been
/// sending SIGTERM to them: log who sends it (pid and command line) and carry on, so a
/// run is not lost to a stray signal (Ctrl-C, SIGINT, still stops it; so does SIGKILL).
pub fn log_sigterm_senders() {
    // SAFETY: installs a handler that only stores into an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_term as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let pid = TERM_FROM.swap(0, std::sync::atomic::Ordering::SeqCst);
            if pid != 0 {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                    .unwrap_or_else(|_| "(gone)".into());
                let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit(')')
                            .next()
                            .and_then(|r| r.split_whitespace().nth(1).map(String::from))
                    })
                    .unwrap_or_default();
                eprintln!(
                    "!! SIGTERM from pid {pid} (ppid {ppid}): {cmd} -- ignored, the benchmark goes on"
                );
            }
        }
    });
}
