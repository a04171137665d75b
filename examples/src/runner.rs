//! Runs a [`Gateway`] from Gateway API YAML: load, translate, apply, publish status; again on
//! every change of the watched files. Bad input is reported and the last good configuration
//! keeps serving; nothing here exits the process because of configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::Gateway;
use gateway_k8s::source::{self, FileSource};
use gateway_k8s::{Resources, TranslateOptions, Translator};

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
        }
    }

    /// Translates and applies one snapshot of the resources.
    pub async fn apply(&mut self, resources: &Resources, mut diagnostics: Vec<String>) {
        let translation = self.translator.translate(resources);
        diagnostics.extend(translation.diagnostics.iter().map(|d| d.to_string()));
        match self.gateway.apply(translation.config).await {
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
        let yaml = translation.status.to_yaml();
        if let Some(path) = &self.status_file {
            // Write then rename, so readers never see half a file.
            let tmp = path.with_extension("tmp");
            let written = tokio::fs::write(&tmp, yaml.as_bytes()).await;
            if let Err(e) = written.and(tokio::fs::rename(&tmp, path).await) {
                tracing::error!(path = %path.display(), error = %e, "cannot write the status file");
            }
        }
        self.admin.set_status(yaml);
        self.admin.set_diagnostics(diagnostics);
        self.admin.set_ready();
    }

    async fn reload(&mut self, source: &mut FileSource) {
        let loaded = source.load();
        let diagnostics = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        self.apply(&loaded.resources, diagnostics).await;
    }

    /// Applies `input`, then re-applies on every change until the process ends.
    pub async fn run(mut self, input: Input) {
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
                        loop {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            self.reload(&mut source).await;
                        }
                    }
                };
                while changes.recv().await.is_some() {
                    self.reload(&mut source).await;
                }
            }
        }
    }
}
