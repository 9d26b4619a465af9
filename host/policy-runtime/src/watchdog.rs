//! Call deadlines without a ticker. wasmtime interrupts a guest when the
//! engine's epoch passes the store's deadline; something has to advance the
//! epoch. A thread that did so every millisecond cost 1 000 wake-ups a
//! second with no plugin running (BENCHMARKS.md, idle heartbeat CPU). This
//! [`Watchdog`] sleeps until the earliest deadline of the calls in flight,
//! and indefinitely while none is: it wakes when a call arms it and at that
//! call's deadline, so twice per call at most, and an idle host's one call
//! a second (its `tick` event) costs two wake-ups, not a thousand.
//!
//! Each call arms the watchdog with its deadline and sets its store to be
//! interrupted at the next epoch. When the watchdog advances the epoch,
//! every running store asks its [`CallBudget`] whether its own time is up:
//! a call whose deadline has not come (another call's woke the watchdog)
//! carries on. The budget counts the calling thread's CPU time, so a call
//! preempted by a busy machine is not charged for the time it did not
//! run; a wall-clock cap of [`WALL_CAP_FACTOR`] times the budget still
//! bounds it. A plugin that loops is cut off within about a millisecond of
//! its budget: the watchdog wakes at the deadline itself.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use wasmtime::{Engine, EngineWeak, Trap, UpdateDeadline};

/// A call may run this many times its budget in wall-clock time when the
/// machine keeps it off the CPU; past that it is stopped regardless.
pub const WALL_CAP_FACTOR: u32 = 4;

/// How often an idle watchdog looks whether its engine is gone.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// Deadlines of the calls in flight, by arm id (a handful at most: the
/// policy thread and any validation running).
#[derive(Default)]
struct Armed {
    deadlines: Vec<(u64, Instant)>,
    next_id: u64,
}

impl Armed {
    fn earliest(&self) -> Option<Instant> {
        self.deadlines.iter().map(|(_, at)| *at).min()
    }
}

/// After a deadline fires, the watchdog fires it again every this long
/// until the call disarms or re-arms: an epoch advance that a call misses
/// (it was between host code and its next check) is never its last.
const REFIRE: Duration = Duration::from_millis(1);

/// The thread that advances the engine's epoch when a call's time is due.
#[derive(Clone)]
pub(crate) struct Watchdog {
    shared: Arc<(Mutex<Armed>, Condvar)>,
}

impl Watchdog {
    /// Starts the watchdog of `engine`; it stops once the engine is gone.
    pub(crate) fn start(engine: &Engine) -> std::io::Result<Watchdog> {
        let watchdog = Watchdog {
            shared: Arc::new((Mutex::new(Armed::default()), Condvar::new())),
        };
        let shared = Arc::clone(&watchdog.shared);
        let weak = engine.weak();
        thread::Builder::new()
            .name("vigil-watchdog".to_owned())
            .spawn(move || watch(&shared, &weak))?;
        Ok(watchdog)
    }

    /// Wakes the watchdog at `deadline` (unless disarmed first).
    fn arm(&self, deadline: Instant) -> u64 {
        let (lock, wake) = &*self.shared;
        let mut armed = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let id = armed.next_id;
        armed.next_id += 1;
        let earliest = armed.earliest();
        armed.deadlines.push((id, deadline));
        // Only a new earliest deadline changes when the watchdog must wake.
        if earliest.is_none_or(|earliest| deadline < earliest) {
            wake.notify_one();
        }
        id
    }

    fn disarm(&self, id: u64) {
        let (lock, _) = &*self.shared;
        lock.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deadlines
            .retain(|(armed, _)| *armed != id);
    }

    /// Whether the earliest deadline is still `at` (not fired yet).
    #[cfg(test)]
    fn earliest_is_original(&self, at: Instant) -> bool {
        let (lock, _) = &*self.shared;
        lock.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .earliest()
            == Some(at)
    }

    /// Calls armed and not yet done (for tests: an idle engine has none).
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        let (lock, _) = &*self.shared;
        lock.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deadlines
            .len()
    }
}

/// The watchdog thread: sleeps until the earliest deadline (indefinitely
/// when none is armed), then advances the epoch, and again every
/// [`REFIRE`] while a call that is due stays armed.
fn watch(shared: &(Mutex<Armed>, Condvar), engine: &EngineWeak) {
    let (lock, wake) = shared;
    let mut armed = lock.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let now = Instant::now();
        match armed.earliest() {
            None => {
                // Woken by an arm, or now and then to notice the engine is gone.
                armed = wake
                    .wait_timeout(armed, IDLE_CHECK)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                if engine.upgrade().is_none() {
                    return;
                }
            }
            Some(at) if at <= now => {
                for (_, deadline) in armed.deadlines.iter_mut() {
                    if *deadline <= now {
                        *deadline = now + REFIRE;
                    }
                }
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
            Some(at) => {
                armed = wake
                    .wait_timeout(armed, at - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
    }
}

/// One guest call's allowance, kept in its store while it runs.
pub(crate) struct CallBudget {
    watchdog: Watchdog,
    budget: Duration,
    started_wall: Instant,
    /// The calling thread's CPU clock at the start (a reading, not the
    /// clock: a store moves between threads between calls).
    started_cpu: Option<Duration>,
    wall_cap: Instant,
    armed: Option<u64>,
}

impl CallBudget {
    /// Starts the clock of a call allowed `budget` of CPU time, and arms
    /// the watchdog for it.
    pub(crate) fn start(watchdog: &Watchdog, budget: Duration) -> CallBudget {
        let started_wall = Instant::now();
        let mut call = CallBudget {
            watchdog: watchdog.clone(),
            budget,
            started_wall,
            started_cpu: thread_cpu_time(),
            wall_cap: started_wall + budget.saturating_mul(WALL_CAP_FACTOR),
            armed: None,
        };
        call.arm(started_wall + budget);
        call
    }

    fn arm(&mut self, at: Instant) {
        self.disarm();
        self.armed = Some(self.watchdog.arm(at));
    }

    fn disarm(&mut self) {
        if let Some(id) = self.armed.take() {
            self.watchdog.disarm(id);
        }
    }

    /// CPU time the calling thread has spent in this call (wall time where
    /// the thread's CPU clock cannot be read).
    fn used(&self) -> Duration {
        match (self.started_cpu, thread_cpu_time()) {
            (Some(started), Some(now)) => now.saturating_sub(started),
            _ => self.started_wall.elapsed(),
        }
    }

    /// Asked on the calling thread each time the epoch advances: stop the
    /// guest if its budget is spent, or let it run until the rest is.
    pub(crate) fn on_epoch(&mut self) -> wasmtime::Result<UpdateDeadline> {
        let now = Instant::now();
        let used = self.used();
        if used >= self.budget || now >= self.wall_cap {
            self.disarm();
            return Err(Trap::Interrupt.into());
        }
        let rest = (self.budget - used).min(self.wall_cap - now);
        self.arm(now + rest);
        Ok(UpdateDeadline::Continue(1))
    }
}

/// The calling thread's CPU time so far, where the platform tells it.
fn thread_cpu_time() -> Option<Duration> {
    ThreadTime::try_now().ok().map(|time| time.as_duration())
}

impl Drop for CallBudget {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        Engine::new(&config).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn a_budget_that_is_not_spent_carries_on_and_one_that_is_stops() {
        let engine = engine();
        let watchdog = Watchdog::start(&engine).unwrap_or_else(|error| panic!("{error}"));
        let mut call = CallBudget::start(&watchdog, Duration::from_millis(50));
        assert_eq!(watchdog.in_flight(), 1);
        // Woken early (another call's deadline): not yet spent.
        assert!(matches!(call.on_epoch(), Ok(UpdateDeadline::Continue(1))));
        // Spend the budget on this thread's CPU (by its CPU clock: a busy
        // machine may take longer in wall time).
        let spin = Instant::now();
        let cpu_at_start = thread_cpu_time().unwrap_or_default();
        while thread_cpu_time().unwrap_or_default() < cpu_at_start + Duration::from_millis(60)
            && spin.elapsed() < Duration::from_secs(10)
        {
            std::hint::black_box(spin.elapsed());
        }
        assert!(call.on_epoch().is_err());
        drop(call);
        assert_eq!(
            watchdog.in_flight(),
            0,
            "a finished call leaves nothing armed"
        );
    }

    #[test]
    fn a_call_kept_off_the_cpu_is_not_charged_until_its_wall_cap() {
        let engine = engine();
        let watchdog = Watchdog::start(&engine).unwrap_or_else(|error| panic!("{error}"));
        let mut call = CallBudget::start(&watchdog, Duration::from_millis(100));
        // Asleep, as a preempted thread would be: wall time passes, CPU
        // time does not.
        thread::sleep(Duration::from_millis(120));
        assert!(matches!(call.on_epoch(), Ok(UpdateDeadline::Continue(1))));
        thread::sleep(Duration::from_millis(300));
        assert!(
            call.on_epoch().is_err(),
            "past 4x its budget it stops anyway"
        );
    }

    #[test]
    fn the_watchdog_advances_the_epoch_at_the_deadline_and_not_before() {
        let engine = engine();
        let watchdog = Watchdog::start(&engine).unwrap_or_else(|error| panic!("{error}"));
        let start = Instant::now();
        let id = watchdog.arm(start + Duration::from_millis(30));
        // Until it fires, the entry keeps its time; then it re-fires.
        while watchdog.earliest_is_original(start + Duration::from_millis(30))
            && start.elapsed() < Duration::from_secs(2)
        {
            thread::sleep(Duration::from_millis(1));
        }
        let fired = start.elapsed();
        assert!(
            fired >= Duration::from_millis(30) && fired < Duration::from_millis(1_500),
            "fired after {fired:?}"
        );
        watchdog.disarm(id);
    }
}
