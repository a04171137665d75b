//! Runs a [`Gateway`] from Gateway API YAML: load, translate, apply, publish status; again on
//! every change of the watched files. Bad input is reported and the last good configuration
//! keeps serving; nothing here exits the process because of configuration. When what the gateway
//! knows about the names of XBackends changes ([`Gateway::dns_updates`]), the input is translated
//! and applied again, so the status is published with the new resolution conditions.
//!
//! Of a translation, the translator keeps the translated rules of each HTTPRoute (shared with
//! the applied configuration), so that a change retranslates only the routes that changed, and
//! the gateway's compile reuses what it compiled for the others; the status YAML is kept
//! compressed by the admin endpoint. The file source keeps the parsed objects of the current
//! files, so a change parses only the documents that changed, and keeps the loaded objects
//! themselves, so a change of some documents replaces only their objects.
//! The gateway is marked ready as soon as its configuration is applied. The status is rendered
//! and published after that, on a blocking thread, so that the next change of the files is
//! loaded and applied without waiting for it; statuses are published in the order of the loads,
//! one render at a time, and a status superseded by a newer load before its render started is
//! skipped (the newer one is published).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::Gateway;
use gateway_core::config::Limits;
use gateway_k8s::source::{self, FileSource};
use gateway_k8s::{RenderCache, Resources, StatusReport, StatusText, TranslateOptions, Translator};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    on_applied: Option<Arc<dyn Fn() + Send + Sync>>,
    /// The status of the previous apply being rendered and published.
    publishing: Option<JoinHandle<()>>,
    /// How many statuses were handed to [`Runner::publish_later`]: a status whose number is
    /// not the latest when its turn comes is superseded and not rendered.
    published: Arc<std::sync::atomic::AtomicU64>,
    /// The text of each object from the last published status, reused for the objects that did
    /// not change (one render at a time holds it).
    render_cache: Arc<std::sync::Mutex<RenderCache>>,
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
            publishing: None,
            published: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            render_cache: Arc::default(),
        }
    }

    /// Checks `ExtensionRef` filters against `registry` when translating, so a filter the gateway
    /// cannot build is reported in the route's status (see `Translator::with_filters`). Pass the
    /// registry the gateway serves with.
    pub fn with_filters(mut self, registry: gateway_core::FilterRegistry) -> Self {
        self.translator.set_filters(Some(registry));
        self
    }

    /// Calls `hook` after every apply, once the translation's transient memory (parsed objects,
    /// status documents) is freed: the example binaries use it to hand freed memory back to the
    /// OS at once instead of keeping a large configuration's peak resident.
    pub fn on_applied(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_applied = Some(Arc::new(hook));
        self
    }

    /// Applies `limits` (connection limits, HTTP/1 timeouts, the body buffering cap) with every
    /// configuration instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Translates and applies one snapshot of the resources, then renders and publishes its
    /// status before returning.
    pub async fn apply(&mut self, resources: &Resources, diagnostics: Vec<String>) {
        let started = std::time::Instant::now();
        let status = self.apply_config(resources, diagnostics).await;
        let applied = started.elapsed();
        self.wait_published().await;
        let text = {
            let mut cache = self.render_cache.lock().unwrap_or_else(|e| e.into_inner());
            status.to_yaml_reusing(resources, &mut cache)
        };
        publish(&self.admin, self.status_file.as_deref(), text).await;
        tracing::info!(
            apply_ms = applied.as_millis() as u64,
            status_ms = (started.elapsed() - applied).as_millis() as u64,
            "configuration applied and its status published"
        );
    }

    /// Translates and applies `resources` and marks the gateway ready; returns the status
    /// (unrendered, with the DNS resolution conditions).
    async fn apply_config(
        &mut self,
        resources: &Resources,
        mut diagnostics: Vec<String>,
    ) -> StatusReport {
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
        let (routes_reused, routes_translated) = self.translator.route_reuse();
        tracing::info!(
            translate_ms = ms(translated),
            apply_ms = ms(started.elapsed() - translated),
            routes_reused,
            routes_translated,
            routes_patched = self.translator.patched_last(),
            "configuration translated and applied"
        );
        let mut status = translation.status;
        self.translator
            .resolution_status(&mut status, &self.gateway.dns_status());
        status
    }

    /// Runs the [`Runner::on_applied`] hook; called once a load's objects are dropped.
    fn applied(&self) {
        if let Some(hook) = &self.on_applied {
            hook();
        }
    }

    /// Waits until the status of the previous apply is published.
    async fn wait_published(&mut self) {
        if let Some(task) = self.publishing.take() {
            let _ = task.await;
        }
    }

    /// Renders and publishes `status` on a blocking thread once the previous status is
    /// published, then drops `resources` and runs the [`Runner::on_applied`] hook. Returns at
    /// once. One status is rendered at a time, and a status superseded by a newer one while it
    /// waits for its turn is dropped unrendered: with 10,000 routes a render takes seconds of
    /// CPU on a busy machine, and renders of every change in a quick series would run side by
    /// side and slow down the loads and compiles of the next changes.
    ///
    /// The render reads its own copy of the objects' map (the objects themselves are shared),
    /// made at once on a blocking thread: the file source patches the `Arc` it handed out in
    /// place on the next load when no one else holds it, instead of copying it on the reload's
    /// critical path while a render still runs.
    fn publish_later(&mut self, status: StatusReport, resources: Arc<Resources>) {
        use std::sync::atomic::Ordering;
        let resources = tokio::task::spawn_blocking(move || {
            let own = Arc::new(Resources::clone(&resources));
            drop(resources);
            own
        });
        let previous = self.publishing.take();
        let admin = self.admin.clone();
        let status_file = self.status_file.clone();
        let hook = self.on_applied.clone();
        let published = self.published.clone();
        let cache = self.render_cache.clone();
        let number = published.fetch_add(1, Ordering::SeqCst) + 1;
        self.publishing = Some(tokio::spawn(async move {
            let resources = resources.await;
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let Ok(resources) = resources else {
                tracing::error!("copying the objects for the status render failed");
                return;
            };
            if published.load(Ordering::SeqCst) != number {
                // A newer status is queued behind this one: it is the one to publish.
                tracing::debug!("configuration status superseded before it was rendered");
                return;
            }
            let started = std::time::Instant::now();
            // Rendering and serialising take hundreds of milliseconds with 10,000 routes: not on
            // a runtime worker that serves requests.
            let wants_file = status_file.is_some();
            let rendered = tokio::task::spawn_blocking(move || {
                let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                let text = status.to_yaml_reusing(&resources, &mut cache);
                drop(resources);
                // Only a status file needs the plain text.
                let yaml = wants_file.then(|| text.to_yaml());
                (text, yaml)
            })
            .await;
            match rendered {
                Ok((text, yaml)) => {
                    if let Some(yaml) = yaml {
                        write_status_file(status_file.as_deref(), &yaml).await;
                    }
                    admin.set_status(text);
                    tracing::info!(
                        status_ms = started.elapsed().as_millis() as u64,
                        "configuration status published"
                    );
                }
                Err(e) => tracing::error!(error = %e, "rendering the status failed"),
            }
            if let Some(hook) = hook {
                hook();
            }
        }));
    }

    async fn reload(&mut self, source: &mut FileSource) {
        let started = std::time::Instant::now();
        let loaded = source.load();
        tracing::info!(
            load_ms = ms(started.elapsed()),
            objects = loaded.resources.len(),
            parsed_documents = source.parsed_documents(),
            "configuration files read"
        );
        let diagnostics = loaded.diagnostics.iter().map(|d| d.to_string()).collect();
        let status = self.apply_config(&loaded.resources, diagnostics).await;
        self.publish_later(status, loaded.resources);
    }

    /// Applies `input`. Files: then re-applies on every change and on every DNS change (for the
    /// status), until the process ends. A fixed input is applied once and this returns.
    pub async fn run(mut self, input: Input) {
        let mut dns = self.gateway.dns_updates();
        match input {
            Input::Fixed(resources) => {
                self.apply(&resources, Vec::new()).await;
                drop(resources);
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
                            None => {
                                self.wait_published().await;
                                break;
                            }
                        },
                        _ = dns_changed(&mut dns) => self.reload(&mut source).await,
                    }
                }
            }
        }
    }
}

/// `d` in milliseconds, with microseconds as the fraction (for the timing logs).
fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1_000.0
}

/// Resolves when `dns` changes; never, once the gateway is gone.
async fn dns_changed(dns: &mut watch::Receiver<u64>) {
    if dns.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Writes `status` to `status_file` (if any) and the admin endpoint.
async fn publish(admin: &AdminState, status_file: Option<&std::path::Path>, text: StatusText) {
    if status_file.is_some() {
        write_status_file(status_file, &text.to_yaml()).await;
    }
    admin.set_status(text);
}

/// Writes `yaml` to `status_file`, if there is one.
async fn write_status_file(status_file: Option<&std::path::Path>, yaml: &str) {
    if let Some(path) = status_file {
        // Write then rename, so readers never see half a file.
        let tmp = path.with_extension("tmp");
        let written = tokio::fs::write(&tmp, yaml.as_bytes()).await;
        if let Err(e) = written.and(tokio::fs::rename(&tmp, path).await) {
            tracing::error!(path = %path.display(), error = %e, "cannot write the status file");
        }
    }
}
