//! Runs a [`Gateway`] from Gateway API YAML: load, translate, apply, publish status; again on
//! every change of the watched files. Bad input is reported and the last good configuration
//! keeps serving; nothing here exits the process because of configuration. When what the gateway
//! knows about the names of XBackends changes ([`Gateway::dns_updates`]), the input is translated
//! and applied again, so the status is published with the new resolution conditions.
//!
//! Nothing of a translation is kept once it is applied and its status published (the status
//! YAML is kept compressed by the admin endpoint): with 10,000 routes the parsed objects and the
//! echoed status documents are hundreds of megabytes that a long-running gateway should not hold.
//! The gateway is marked ready as soon as its configuration is applied, before the status is
//! rendered.

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
    /// Overload limits and HTTP/1 timeouts applied with every configuration.
    limits: Limits,
    /// Called after every apply, once the status is published (see [`Runner::on_applied`]).
    on_applied: Option<Box<dyn Fn() + Send + Sync>>,
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
            limits: Limits::default(),
            on_applied: None,
        }
    }

    /// Calls `hook` after every apply, once the translation's transient memory (parsed objects,
    /// status documents) is freed: the example binaries use it to hand freed memory back to the
    /// OS at once instead of keeping a large configuration's peak resident.
    pub fn on_applied(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_applied = Some(Box::new(hook));
        self
    }

    /// Applies `limits` (connection limits, HTTP/1 timeouts, the body buffering cap) with every
    /// configuration instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Translates and applies one snapshot of the resources.
    pub async fn apply(&mut self, resources: &Resources, mut diagnostics: Vec<String>) {
        let started = std::time::Instant::now();
        let translation = self.translator.translate_unrendered(resources);
        let translated = started.elapsed();
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
        self.admin.set_diagnostics(diagnostics);
        self.admin.set_ready();
        let applied = started.elapsed();
        let mut status = translation.status;
        self.translator
            .resolution_status(&mut status, &self.gateway.dns_status());
        status.render(resources);
        self.publish(&status).await;
        tracing::info!(
            translate_ms = translated.as_millis() as u64,
            apply_ms = (applied - translated).as_millis() as u64,
            status_ms = (started.elapsed() - applied).as_millis() as u64,
            "configuration translated, applied and its status published"
        );
    }

    /// Runs the [`Runner::on_applied`] hook; called once a load's objects are dropped.
    fn applied(&self) {
        if let Some(hook) = &self.on_applied {
            hook();
        }
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
        let started = std::time::Instant::now();
        let loaded = source.load();
        tracing::info!(
            load_ms = started.elapsed().as_millis() as u64,
            objects = loaded.resources.len(),
            "configuration files read"
        );
        let diagnostics = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        self.apply(&loaded.resources, diagnostics).await;
        drop(loaded);
        self.applied();
    }

    /// Applies `input`. Files: then re-applies on every change and on every DNS change (for the
    /// status), until the process ends. A fixed input is applied once and this returns.
    pub async fn run(mut self, input: Input) {
        let mut dns = self.gateway.dns_updates();
        match input {
            Input::Fixed(resources) => {
                self.apply(&resources, Vec::new()).await;
                self.applied();
            }
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
                                _ = dns_changed(&mut dns) => self.reload(&mut source).await,
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
                        _ = dns_changed(&mut dns) => self.reload(&mut source).await,
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
