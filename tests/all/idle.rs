//! An idle host sleeps. With no plugin call running, the deadline watchdog
//! does not wake at all (the old epoch ticker woke 1 000 times a second),
//! and with nothing due the shared tick wakes about once a second instead
//! of ten times. Measured on a real `vigil serve` child, from the kernel's
//! count of each thread's voluntary context switches (one per wake-up).

use std::time::Duration;

use crate::cli::start_server;

/// Voluntary context switches of every thread of `pid`, by thread name.
fn wakeups_by_thread(pid: u32) -> Vec<(String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        panic!("cannot read /proc/{pid}/task");
    };
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|count| count.trim().parse::<u64>().ok())
            .unwrap_or(0);
        threads.push((name.trim().to_owned(), switches));
    }
    threads
}

fn total(threads: &[(String, u64)], name: Option<&str>) -> u64 {
    threads
        .iter()
        .filter(|(thread, _)| name.is_none_or(|name| thread == name))
        .map(|(_, switches)| switches)
        .sum()
}

#[test]
fn an_idle_host_barely_wakes_up() {
    let server = start_server(&[]);
    let pid = server.child.id();
    // Let start-up (plugin check, first ticks) settle.
    std::thread::sleep(Duration::from_millis(1_500));
    let before = wakeups_by_thread(pid);
    std::thread::sleep(Duration::from_secs(3));
    let after = wakeups_by_thread(pid);
    assert!(
        after.iter().any(|(name, _)| name == "vigil-watchdog"),
        "no watchdog thread: {after:?}"
    );
    let watchdog = total(&after, Some("vigil-watchdog")) - total(&before, Some("vigil-watchdog"));
    let process = total(&after, None).saturating_sub(total(&before, None));
    eprintln!("in 3 s idle: watchdog woke {watchdog} times, the whole process {process} times");
    // It wakes only around policy calls (when one is armed, and at its
    // deadline): an idle host makes one a second, handing the plugin its
    // `tick` event. About 6.
    assert!(watchdog <= 10, "the watchdog woke {watchdog} times in 3 s");
    // The tick (about once a second) and the policy call it makes, the
    // watchdog, the runtime's own timers: about 15. A tick every 100 ms
    // would make well over 100 (each tick wakes a worker, the policy
    // thread and the watchdog twice); the old 1 ms ticker 3 000.
    assert!(
        process <= 40,
        "the idle process woke {process} times in 3 s: {after:?}"
    );
}
