//! Native `wss://`: rustls with a certificate chain and key from PEM files,
//! reloaded on SIGHUP or when either file changes. A reload affects new
//! connections only; sessions keep the TLS state they were accepted with,
//! so none is dropped. A file that fails to load keeps the old certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::core::config::TlsConfig;

/// Quiet time after a certificate file changes before reloading (a
/// renewal writes the chain and key in several steps).
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// The TLS configuration in force, swapped whole on reload.
pub struct TlsReloader {
    paths: TlsConfig,
    current: ArcSwap<ServerConfig>,
}

/// Reads the files into a rustls configuration: TLS 1.2 and 1.3 with
/// rustls' safe defaults (forward-secret suites only), `http/1.1` by ALPN.
fn server_config(paths: &TlsConfig) -> anyhow::Result<ServerConfig> {
    let certs = CertificateDer::pem_file_iter(&paths.cert)
        .with_context(|| format!("cannot read the TLS certificate {}", paths.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", paths.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", paths.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key).with_context(|| {
        format!(
            "cannot read the TLS key {} (PEM: PKCS#8, PKCS#1 or SEC1)",
            paths.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not go together")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl TlsReloader {
    /// Loads the certificate and key, or says what is wrong with them.
    pub fn load(paths: &TlsConfig) -> anyhow::Result<Arc<Self>> {
        let config = server_config(paths)?;
        Ok(Arc::new(TlsReloader {
            paths: paths.clone(),
            current: ArcSwap::from_pointee(config),
        }))
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Reads the files again; on failure the old configuration stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.paths)?;
        self.current.store(Arc::new(config));
        tracing::info!(cert = %self.paths.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// Reloads on SIGHUP and whenever the certificate or key file changes,
    /// until the returned guard is dropped.
    pub fn watch(self: &Arc<Self>) -> anyhow::Result<TlsWatch> {
        let (changed, mut changes) = mpsc::unbounded_channel::<()>();
        let files: Vec<_> = [&self.paths.cert, &self.paths.key]
            .iter()
            .map(|path| path.canonicalize().unwrap_or_else(|_| path.to_path_buf()))
            .collect();
        let watched = files.clone();
        let on_change = changed.clone();
        let mut debouncer = new_debouncer(RELOAD_DEBOUNCE, move |result: DebounceEventResult| {
            if let Ok(events) = result {
                let ours = events.iter().any(|event| {
                    let path = event
                        .path
                        .canonicalize()
                        .unwrap_or_else(|_| event.path.clone());
                    watched.contains(&path)
                });
                if ours {
                    let _ = on_change.send(());
                }
            }
        })
        .context("cannot start the certificate file watcher")?;
        let mut directories: Vec<&Path> = files.iter().filter_map(|file| file.parent()).collect();
        directories.dedup();
        for directory in directories {
            debouncer
                .watcher()
                .watch(directory, RecursiveMode::NonRecursive)
                .with_context(|| format!("cannot watch {}", directory.display()))?;
        }
        let reloader = Arc::clone(self);
        let task = tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangups =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hangups.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                tokio::select! {
                    change = changes.recv() => if change.is_none() { break },
                    _ = hangup => {}
                }
                if let Err(error) = reloader.reload() {
                    tracing::error!(error = %format!("{error:#}"), "TLS certificate reload failed; the old certificate stays");
                }
            }
        });
        drop(changed);
        Ok(TlsWatch {
            _debouncer: debouncer,
            task,
        })
    }
}

/// Keeps certificate reloading alive; dropping it stops it.
pub struct TlsWatch {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
