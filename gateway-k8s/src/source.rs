//! The file source: reads YAML files and directories into [`Resources`] and watches them.
//!
//! This is the only module of the crate that does I/O.
//!
//! Plain files lack what the Kubernetes API server fills in, so [`FileSource`] stamps it, keeping
//! state across loads:
//!
//! * `metadata.generation`: when absent, 1 on first sight, then bumped by one each time the
//!   object's content (everything but `metadata` and `status`) changes between loads;
//! * `metadata.creationTimestamp`: when absent, the time the object was first seen;
//! * `metadata.namespace`: `default` when absent on a namespaced kind.
//!
//! An object missing from a load is forgotten: if it comes back it starts again at generation 1
//! with a new creation time, like a deleted and re-created object.
//!
//! A file that cannot be used as a whole, because it cannot be read (other than being gone), a
//! document in it is not YAML, or a document of a kind this crate reads does not fit its schema,
//! is not half-applied: the source keeps serving the objects of that file's last good version,
//! and reports the problem, until the file is fixed. This is what the Kubernetes API server does
//! with an invalid `kubectl apply`: it refuses the change and the stored objects stay. A file
//! that was never good contributes the documents that are valid. A deleted file deletes its
//! objects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::diagnostic::Diagnostic;
use crate::resources::{DEFAULT_NAMESPACE, DocumentError, Kind, Resources};
use crate::yaml;

/// How long the file system must stay quiet before a change is reported.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// The result of [`FileSource::load`].
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every object read (with stamped metadata). Its own `diagnostics` field is emptied into
    /// [`Loaded::diagnostics`].
    pub resources: Resources,
    /// Unreadable files, unparseable documents, unknown kinds, duplicates.
    pub diagnostics: Vec<Diagnostic>,
}

/// Identity of an object across loads: API group, kind, namespace and name.
type Identity = (String, String, String, String);

#[derive(Clone, Debug)]
struct Tracked {
    /// A hash of the content (everything but `metadata`, `status` and `apiVersion`): the whole
    /// content is not kept, only whether it changed matters.
    content: u64,
    generation: i64,
    created: String,
}

/// Reads YAML from files and directories, remembering generations and creation times between
/// loads (see the module documentation).
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    tracked: HashMap<Identity, Tracked>,
    /// Each file's text from its last good load (parsed again only when the file breaks).
    last_good: HashMap<PathBuf, String>,
}

impl FileSource {
    /// A source reading `paths`: files are read as they are; directories are searched
    /// recursively for `.yaml` / `.yml` files, in sorted order.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        FileSource {
            paths,
            tracked: HashMap::new(),
            last_good: HashMap::new(),
        }
    }

    /// The configured paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The files a load reads, in order, and problems listing directories.
    pub fn files(&self) -> (Vec<PathBuf>, Vec<Diagnostic>) {
        let mut files = Vec::new();
        let mut diagnostics = Vec::new();
        for path in &self.paths {
            if path.is_dir() {
                collect_yaml(path, &mut files, &mut diagnostics);
            } else {
                files.push(path.clone());
            }
        }
        (files, diagnostics)
    }

    /// Reads every file now. Never fails: problems become diagnostics.
    pub fn load(&mut self) -> Loaded {
        self.load_at(Timestamp::now())
    }

    /// Like [`FileSource::load`], with `now` as the creation time of new objects.
    pub fn load_at(&mut self, now: Timestamp) -> Loaded {
        let now = Timestamp::from_second(now.as_second())
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_string();
        let (files, mut diagnostics) = self.files();
        let mut resources = Resources::new();
        let mut seen: HashMap<Identity, Tracked> = HashMap::new();
        let mut last_good = HashMap::new();
        for file in files {
            let origin = file.display().to_string();
            let (text, documents, broken) = match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let (documents, broken) = read_documents(&text, &origin, &mut diagnostics);
                    (text, documents, broken)
                }
                Err(err) => {
                    diagnostics.push(Diagnostic::origin(&origin, format!("cannot read: {err}")));
                    if err.kind() == std::io::ErrorKind::NotFound {
                        continue;
                    }
                    (String::new(), Vec::new(), true)
                }
            };
            let mut file_seen = HashMap::new();
            let mut objects = self.add_documents(documents, &origin, &now, &mut file_seen);
            let broken = broken || objects.invalid;
            match self.last_good.remove(&file) {
                Some(good) if broken => {
                    diagnostics.append(&mut objects.resources.diagnostics);
                    diagnostics.push(Diagnostic::origin(
                        &origin,
                        "not applied; its last good version keeps serving until it is fixed",
                    ));
                    file_seen.clear();
                    // The good text parsed before; its problems (none) are not reported again.
                    let (documents, _) = read_documents(&good, &origin, &mut Vec::new());
                    objects = self.add_documents(documents, &origin, &now, &mut file_seen);
                    last_good.insert(file, good);
                }
                _ if broken => {}
                _ => {
                    last_good.insert(file, text);
                }
            }
            seen.extend(file_seen);
            resources.merge(objects.resources);
        }
        self.tracked = seen;
        self.last_good = last_good;
        diagnostics.append(&mut resources.diagnostics);
        Loaded {
            resources,
            diagnostics,
        }
    }

    /// Stamps and adds one file's documents to a fresh store.
    fn add_documents(
        &self,
        documents: Vec<(usize, Value)>,
        origin: &str,
        now: &str,
        seen: &mut HashMap<Identity, Tracked>,
    ) -> FileObjects {
        let mut resources = Resources::new();
        let mut invalid = false;
        for (index, mut value) in documents {
            self.stamp(&mut value, now, seen);
            if let Err(DocumentError::Invalid(_)) =
                resources.add_value_checked(value, origin, index)
            {
                invalid = true;
            }
        }
        FileObjects { resources, invalid }
    }

    /// Fills in generation, creationTimestamp and namespace, as described in the module docs.
    fn stamp(&self, value: &mut Value, now: &str, seen: &mut HashMap<Identity, Tracked>) {
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind_name = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let Some(kind) = Kind::from_type(api_version, kind_name) else {
            return;
        };
        let group = api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
            .to_string();
        let content = content_hash(value);
        let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        let Some(name) = metadata
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        let namespace = if kind.namespaced() {
            let ns = metadata
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(DEFAULT_NAMESPACE)
                .to_string();
            metadata.insert("namespace".into(), Value::String(ns.clone()));
            ns
        } else {
            String::new()
        };
        let identity = (group, kind.as_str().to_string(), namespace, name);
        let previous = self.tracked.get(&identity);

        let generation = match metadata.get("generation").and_then(Value::as_i64) {
            Some(g) => g,
            None => {
                let g = match previous {
                    Some(p) if p.content == content => p.generation,
                    Some(p) => p.generation + 1,
                    None => 1,
                };
                metadata.insert("generation".into(), Value::from(g));
                g
            }
        };
        let created = match metadata.get("creationTimestamp").and_then(Value::as_str) {
            Some(c) if !c.is_empty() => c.to_string(),
            _ => {
                let c = previous
                    .map(|p| p.created.clone())
                    .unwrap_or_else(|| now.to_string());
                metadata.insert("creationTimestamp".into(), Value::String(c.clone()));
                c
            }
        };
        seen.insert(
            identity,
            Tracked {
                content,
                generation,
                created,
            },
        );
    }
}

/// A hash of `value` without `metadata`, `status` and `apiVersion` (what a generation counts),
/// computed without copying it: each remaining field is hashed as its key and its JSON text.
fn content_hash(value: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    /// Feeds serialized JSON into a hasher.
    struct HashWriter(std::collections::hash_map::DefaultHasher);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashWriter(Default::default());
    match value.as_object() {
        Some(map) => {
            for (key, field) in map {
                if matches!(key.as_str(), "metadata" | "status" | "apiVersion") {
                    continue;
                }
                key.hash(&mut w.0);
                // Writing into a hasher cannot fail.
                let _ = serde_json::to_writer(&mut w, field);
                0xffu8.hash(&mut w.0);
            }
        }
        None => {
            let _ = serde_json::to_writer(&mut w, value);
        }
    }
    w.0.finish()
}

/// One file's objects, and whether one of its documents was invalid.
struct FileObjects {
    resources: Resources,
    invalid: bool,
}

/// The non-empty documents of a file, and whether one of them was not YAML (reported).
fn read_documents(
    text: &str,
    origin: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Vec<(usize, Value)>, bool) {
    let mut documents = Vec::new();
    let mut broken = false;
    for doc in yaml::documents(text) {
        match doc.value {
            Ok(Some(value)) => documents.push((doc.index, value)),
            Ok(None) => {}
            Err(message) => {
                broken = true;
                diagnostics.push(Diagnostic::document(
                    origin,
                    doc.index,
                    format!("unparseable YAML: {message}"),
                ));
            }
        }
    }
    (documents, broken)
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn collect_yaml(dir: &Path, files: &mut Vec<PathBuf>, diagnostics: &mut Vec<Diagnostic>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            diagnostics.push(Diagnostic::origin(
                &dir.display().to_string(),
                format!("cannot list directory: {err}"),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect_yaml(&path, files, diagnostics);
        } else if is_yaml(&path) {
            files.push(path);
        }
    }
}

/// Errors starting a watch.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The platform watcher could not be created.
    #[error("cannot create a file watcher: {0}")]
    Create(#[source] notify::Error),
    /// A path (or the directory holding a file) could not be watched.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The path that failed.
        path: PathBuf,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
    /// The working directory is needed to resolve relative paths and could not be read.
    #[error("cannot resolve relative paths: {0}")]
    CurrentDir(#[source] std::io::Error),
}

/// Keeps a watch alive; dropping it stops watching and closes the change channel.
pub struct FileWatcher {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileWatcher")
    }
}

/// What a watch looks at, with absolute paths.
#[derive(Clone, Debug)]
struct Targets {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Targets {
    fn concerns(&self, path: &Path) -> bool {
        self.files.iter().any(|f| f == path)
            || (is_yaml(path) && self.dirs.iter().any(|d| path.starts_with(d)))
    }
}

/// Watches `paths` (files and directories, as given to [`FileSource::new`]) and sends `()` on
/// the returned channel once per settled burst of changes ([`DEBOUNCE`] of quiet).
///
/// Files are watched through their parent directory, so editors that replace a file (write a
/// temporary file, then rename it) are seen. Directories are watched recursively. Only
/// `.yaml` / `.yml` files in directories and the named files themselves count. Works without a
/// Tokio runtime (the debouncing runs on its own thread); the channel holds at most one pending
/// notification.
pub fn watch(paths: &[PathBuf]) -> Result<(FileWatcher, mpsc::Receiver<()>), WatchError> {
    let cwd = std::env::current_dir().map_err(WatchError::CurrentDir)?;
    let mut targets = Targets {
        files: Vec::new(),
        dirs: Vec::new(),
    };
    for path in paths {
        let absolute = if path.is_absolute() {
            path.clone()
        } else {
            cwd.join(path)
        };
        if absolute.is_dir() {
            targets.dirs.push(absolute);
        } else {
            targets.files.push(absolute);
        }
    }

    let (raw_tx, raw_rx) = std_mpsc::channel::<()>();
    let filter = targets.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            let _ = raw_tx.send(());
            return;
        };
        let relevant_kind = match event.kind {
            EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write,
            )) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        if relevant_kind && event.paths.iter().any(|p| filter.concerns(p)) {
            let _ = raw_tx.send(());
        }
    })
    .map_err(WatchError::Create)?;

    for dir in &targets.dirs {
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|source| WatchError::Watch {
                path: dir.clone(),
                source,
            })?;
    }
    let mut parents: Vec<PathBuf> = targets
        .files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    parents.sort();
    parents.dedup();
    for parent in parents {
        watcher
            .watch(&parent, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                path: parent.clone(),
                source,
            })?;
    }

    let (tx, rx) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("gateway-k8s-watch".into())
        .spawn(move || debounce(raw_rx, tx))
        .map_err(|e| WatchError::Create(notify::Error::io(e)))?;
    Ok((FileWatcher { _watcher: watcher }, rx))
}

/// Turns raw change signals into one `()` per quiet period. Ends when the watcher is dropped or
/// the receiver is closed.
fn debounce(raw: std_mpsc::Receiver<()>, tx: mpsc::Sender<()>) {
    while raw.recv().is_ok() {
        loop {
            match raw.recv_timeout(DEBOUNCE) {
                Ok(()) => continue,
                Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
            return;
        }
        tracing::debug!("watched files changed");
    }
}
