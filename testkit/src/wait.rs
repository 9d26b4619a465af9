//! The one way the kit waits: check a condition, sleep until something
//! changes (or a short poll passes), and give up at a deadline with an
//! error that says what was awaited.

use std::time::Duration;

use tokio::sync::Notify;

use crate::error::KitError;

/// Conditions are checked at least this often even when nothing notifies
/// (host state such as the session count changes without telling the kit).
const POLL: Duration = Duration::from_millis(10);

/// Waits until `check` gives a value, for at most `limit`.
pub(crate) async fn bounded<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    changed: &Notify,
) -> Result<T, KitError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // Listen before checking, so a change between the two is not missed.
        let notified = changed.notified();
        if let Some(value) = check() {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(KitError::Timeout {
                what: what.to_owned(),
                after: limit,
            });
        }
        let _ = tokio::time::timeout(POLL, notified).await;
    }
}

/// Runs `future` for at most `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> Result<T, KitError> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| KitError::Timeout {
            what: what.to_owned(),
            after: limit,
        })
}
