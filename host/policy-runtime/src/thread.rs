//! Guest code runs on plain threads, never on a tokio worker (see
//! [`crate::sandbox`]); this awaits such work from async code.

use tokio::sync::oneshot;

/// The thread could not be started, or ended without an answer.
#[derive(Debug, thiserror::Error)]
#[error("the {name} thread {what}")]
pub struct ThreadGone {
    name: String,
    what: String,
}

/// Runs `work` on a new thread named `name` and awaits its result.
pub async fn on_own_thread<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ThreadGone> {
    let (reply, answer) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _ = reply.send(work());
        })
        .map_err(|error| ThreadGone {
            name: name.to_owned(),
            what: format!("could not start: {error}"),
        })?;
    answer.await.map_err(|_| ThreadGone {
        name: name.to_owned(),
        what: "ended without an answer".to_owned(),
    })
}
