//! Runs a [`Gateway`] from Gateway API YAML: load, translate, apply, publish status; again on
//! every change of the watched files. Bad input is reported and the last good configuration
//! keeps serving; nothing here exits the process because of configuration. When what the gateway
//! knows about the names of XBackends changes ([`Gateway::dns_updates`]), the status is published
//! again with the new resolution conditions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::Gateway;
use gateway_core::config::Limits;
use gateway_k8s::source::{self, FileSource};
use gateway_k8s::{Resources, StatusReport, TranslateOptions, Translator};
use tokio::sync::watch;

use crate::admin::AdminState;

/// Where the resources come from.
pub enum Input {
    /// Files and directories, watched for changes.
    Files(Vec<PathBuf>),
    /// A fixed set, e.g. YAML bundled in a binary.
    Fixed(Box<Resources>),
}

/// The long-running part of a YAML-configured gateway.
pub struct Runner {
    gateway: Gateway,
    translator: Translator,
    admin: Arc<AdminState>,
    status_file: Option<PathBuf>,
    /// The status of the last translation, republished when DNS results change.
    status: Option<StatusReport>,
    /// Overload limits and HTTP/1 timeouts applied with every configuration.
    limits: Limits,
}

impl Runner {
    /// A runner applying to `gateway`, reporting to `admin` and, if set, `status_file`.
    pub fn new(
        gateway: Gateway,
        options: TranslateOptions,
        admin: Arc<AdminState>,
        status_file: Option<PathBuf>,
    ) -> Self {
        Runner {
            gateway,
            translator: Translator::new(options),
            admin,
            status_file,
            status: None,
            limits: Limits::default(),
        }
    }

    /// Applies `limits` (connection limits, HTTP/1 timeouts, the body buffering cap) with every
    /// configuration instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Translates and applies one snapshot of the resources.
    pub async fn apply(&mut self, resources: &Resources, mut diagnostics: Vec<String>) {
        let translation = self.translator.translate(resources);
        diagnostics.extend(translation.diagnostics.iter().map(|d| d.to_string()));
        let mut config = translation.config;
        config.limits = self.limits;
        match self.gateway.apply(config).await {
            Ok(report) => {
                if report.changed {
                    tracing::info!(
                        bound = ?report.bound,
                        closed = ?report.closed,
                        "configuration applied"
                    );
                }
                for (addr, why) in &report.failed {
                    diagnostics.push(format!("cannot bind {addr}: {why}"));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration rejected; the previous one keeps serving");
                diagnostics.push(format!("configuration rejected: {e}"));
            }
        }
        for d in &diagnostics {
            tracing::warn!("{d}");
        }
        let mut status = translation.status;
        self.translator
            .resolution_status(&mut status, &self.gateway.dns_status());
        self.publish(&status).await;
        self.status = Some(status);
        self.admin.set_diagnostics(diagnostics);
        self.admin.set_ready();
    }

    /// Publishes the last status again with what the gateway now knows about XBackend names.
    async fn refresh_dns_status(&mut self) {
        let Some(mut status) = self.status.take() else {
            return;
        };
        self.translator
            .resolution_status(&mut status, &self.gateway.dns_status());
        self.publish(&status).await;
        self.status = Some(status);
    }

    /// Writes `status` to the status file (if any) and the admin endpoint.
    async fn publish(&self, status: &StatusReport) {
        let yaml = status.to_yaml();
        if let Some(path) = &self.status_file {
            // Write then rename, so readers never see half a file.
            let tmp = path.with_extension("tmp");
            let written = tokio::fs::write(&tmp, yaml.as_bytes()).await;
            if let Err(e) = written.and(tokio::fs::rename(&tmp, path).await) {
                tracing::error!(path = %path.display(), error = %e, "cannot write the status file");
            }
        }
        self.admin.set_status(yaml);
    }

    async fn reload(&mut self, source: &mut FileSource) {
        let loaded = source.load();
        let diagnostics = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        self.apply(&loaded.resources, diagnostics).await;
    }

    /// Applies `input`. Files: then re-applies on every change, and republishes status on every
    /// DNS change, until the process ends. A fixed input is applied once and this returns.
    pub async fn run(mut self, input: Input) {
        let mut dns = self.gateway.dns_updates();
        match input {
            Input::Fixed(resources) => self.apply(&resources, Vec::new()).await,
            Input::Files(paths) => {
                let mut source = FileSource::new(paths.clone());
                // Watch before the first load so no change between the two is missed.
                let watch = source::watch(&paths);
                self.reload(&mut source).await;
                let (_guard, mut changes) = match watch {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot watch the configuration; polling every 2s");
                        let mut tick = tokio::time::interval(Duration::from_secs(2));
                        tick.tick().await;
                        loop {
                            tokio::select! {
                                _ = tick.tick() => self.reload(&mut source).await,
                                _ = dns_changed(&mut dns) => self.refresh_dns_status().await,
                            }
                        }
                    }
                };
                loop {
                    tokio::select! {
                        change = changes.recv() => match change {
                            Some(()) => self.reload(&mut source).await,
                            None => break,
                        },
                        _ = dns_changed(&mut dns) => self.refresh_dns_status().await,
                    }
                }
            }
        }
    }
}

/// Resolves when `dns` changes; never, once the gateway is gone.
async fn dns_changed(dns: &mut watch::Receiver<u64>) {
    if dns.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
