//! `vigil serve --policy FILE.wasm --watch`: reloads the policy when the file
//! changes, with the same validation as the admin API. Events are debounced
//! (editors and `cp` write in several steps), and the directory is watched
//! rather than the file, so replacing it atomically (write, then rename) is
//! seen too.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};
use tokio::sync::mpsc;

use vigil_policy_runtime::PluginSource;

use crate::core::SessionHost;

/// Quiet time after the last change before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Keeps the watch alive; dropping it stops watching.
pub struct PolicyWatch {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PolicyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `path`; each change is validated and, if it passes,
/// swapped in. A rejected file leaves the running policy as it is.
pub fn watch(host: SessionHost, path: &Path, config_json: String) -> anyhow::Result<PolicyWatch> {
    let path = path
        .canonicalize()
        .with_context(|| format!("cannot watch {}", path.display()))?;
    let directory = path
        .parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no directory to watch", path.display()))?;
    let (changed, mut changes) = mpsc::unbounded_channel::<()>();
    let file = path.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
        Ok(events) => {
            if events.iter().any(|event| same_file(&event.path, &file)) {
                let _ = changed.send(());
            }
        }
        Err(error) => tracing::warn!(%error, "policy file watch error"),
    })
    .context("cannot start the file watcher")?;
    debouncer
        .watcher()
        .watch(&directory, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", directory.display()))?;
    tracing::info!(path = %path.display(), "watching the policy file for changes");
    let task = tokio::spawn(async move {
        while changes.recv().await.is_some() {
            reload(&host, &path, &config_json).await;
        }
    });
    Ok(PolicyWatch {
        _debouncer: debouncer,
        task,
    })
}

fn same_file(changed: &Path, watched: &Path) -> bool {
    changed == watched
        || changed
            .canonicalize()
            .is_ok_and(|changed| changed == watched)
}

async fn reload(host: &SessionHost, path: &Path, config_json: &str) {
    let source = match PluginSource::from_file(path) {
        Ok(source) => source,
        Err(error) => {
            // Mid-replacement, or removed: the next event will tell.
            tracing::warn!(%error, "cannot read the changed policy file");
            return;
        }
    };
    if source.sha256() == host.policy().info().sha256 {
        return; // touched, not changed
    }
    if let Err(rejected) = host.swap_policy(source, config_json.to_owned(), None).await {
        tracing::warn!(path = %path.display(), reason = %rejected, "changed policy file rejected");
    }
}
