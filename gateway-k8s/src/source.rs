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
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::diagnostic::Diagnostic;
use crate::resources::{DEFAULT_NAMESPACE, DocumentError, Entry, Kind, Resources};
use crate::yaml;

/// How long the file system must stay quiet before a change is reported while a file is being
/// written (modified and not closed yet): a writer that keeps its file open is given this long
/// between two writes before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// How long the file system must stay quiet after a write completed (the file closed after
/// writing, renamed into place, or removed) before the change is reported: short, so a single
/// write is applied promptly, and long enough to coalesce the events of one save into one load.
pub const SETTLE: Duration = Duration::from_millis(2);

/// The quiet period after a completed write when the change started less than twice this after
/// the last report: writes in quick succession (a burst, a tool writing several files) are
/// reported once more when the burst has settled, not once per write.
pub const BURST_SETTLE: Duration = Duration::from_millis(50);

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

#[derive(Clone, Debug, PartialEq, Eq)]
struct Tracked {
    /// A hash of the content (everything but `metadata`, `status` and `apiVersion`): the whole
    /// content is not kept, only whether it changed matters.
    content: u64,
    generation: i64,
    created: String,
}

/// What one document of a file became. Kept, keyed by a hash of the document's text, for as
/// long as the document is in its file, so the next load reads only the documents that changed.
#[derive(Debug)]
struct CachedDoc {
    /// The length of the document's text (checked with the hash).
    len: usize,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    /// Blank, comments only, or `null`.
    Empty,
    /// Not YAML: the parser's message.
    Unparseable(String),
    /// Parsed and stamped: the identity and stamp given (none for documents that are not a
    /// named object of a typed kind), and the object or why it does not fit its schema.
    Read {
        stamped: Option<Box<(Identity, Tracked)>>,
        entry: Result<Entry, DocumentError>,
    },
}

impl CachedDoc {
    /// Whether reading the same text again now would give the same outcome: always, unless
    /// stamping depended on the previous load's state and that state has changed since.
    fn reusable(&self, tracked: &HashMap<Identity, Tracked>) -> bool {
        match &self.outcome {
            Outcome::Read {
                stamped: Some(stamped),
                ..
            } => tracked.get(&stamped.0) == Some(&stamped.1),
            _ => true,
        }
    }

    /// This outcome for the same text found at document `index` (objects remember where they
    /// were read).
    fn at_document(self: &Arc<Self>, index: usize) -> Arc<CachedDoc> {
        match &self.outcome {
            Outcome::Read {
                stamped,
                entry: Ok(entry),
            } if entry.document() != index => Arc::new(CachedDoc {
                len: self.len,
                outcome: Outcome::Read {
                    stamped: stamped.clone(),
                    entry: Ok(entry.at_document(index)),
                },
            }),
            _ => self.clone(),
        }
    }
}

/// One file's documents by the hash of their text.
type DocCache = HashMap<u64, Arc<CachedDoc>>;

/// Below this many documents to parse, a load parses them on the calling thread.
const PARALLEL_MIN_DOCUMENTS: usize = 64;

/// Reads YAML from files and directories, remembering generations and creation times between
/// loads (see the module documentation).
///
/// Each file's documents are remembered by the hash of their text: a load parses only the
/// documents whose text changed (or whose object's stamped metadata would differ) and shares
/// the objects of the others with the previous load. When many documents need parsing (a cold
/// start), they are parsed on all available cores.
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    tracked: HashMap<Identity, Tracked>,
    /// Each file's text from its last good load (used again when the file breaks).
    last_good: HashMap<PathBuf, String>,
    /// Each file's documents from the last load (its current and last good texts).
    documents: HashMap<PathBuf, DocCache>,
    /// Documents parsed (not taken from the cache) by the last load.
    parsed: usize,
}

impl FileSource {
    /// A source reading `paths`: files are read as they are; directories are searched
    /// recursively for `.yaml` / `.yml` files, in sorted order.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        FileSource {
            paths,
            tracked: HashMap::new(),
            last_good: HashMap::new(),
            documents: HashMap::new(),
            parsed: 0,
        }
    }

    /// The configured paths.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// How many documents the last load parsed; the others were unchanged and taken from the
    /// previous load.
    pub fn parsed_documents(&self) -> usize {
        self.parsed
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
        let mut seen: HashMap<Identity, Tracked> = HashMap::with_capacity(self.tracked.len());
        let mut last_good = HashMap::new();
        let mut documents = HashMap::new();
        self.parsed = 0;
        for file in files {
            let origin = file.display().to_string();
            let previous = self.documents.remove(&file).unwrap_or_default();
            let mut cache = DocCache::with_capacity(previous.len());
            let (text, docs) = match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let docs = self.read_documents(&text, &origin, &now, &previous, &mut cache);
                    (Some(text), docs)
                }
                Err(err) => {
                    diagnostics.push(Diagnostic::origin(&origin, format!("cannot read: {err}")));
                    if err.kind() == std::io::ErrorKind::NotFound {
                        continue;
                    }
                    (None, Vec::new())
                }
            };
            let mut broken = text.is_none();
            for (index, doc) in &docs {
                match &doc.outcome {
                    Outcome::Unparseable(message) => {
                        broken = true;
                        diagnostics.push(Diagnostic::document(
                            &origin,
                            *index,
                            format!("unparseable YAML: {message}"),
                        ));
                    }
                    Outcome::Read { entry: Err(_), .. } => broken = true,
                    _ => {}
                }
            }
            match self.last_good.remove(&file) {
                Some(good) if broken => {
                    // The broken version's problems are reported; its objects are not used.
                    let mut rejected = Resources::new();
                    add_documents(&mut rejected, &docs, &origin, &mut HashMap::new());
                    diagnostics.append(&mut rejected.diagnostics);
                    diagnostics.push(Diagnostic::origin(
                        &origin,
                        "not applied; its last good version keeps serving until it is fixed",
                    ));
                    let good_docs =
                        self.read_documents(&good, &origin, &now, &previous, &mut cache);
                    add_documents(&mut resources, &good_docs, &origin, &mut seen);
                    last_good.insert(file.clone(), good);
                }
                _ => {
                    add_documents(&mut resources, &docs, &origin, &mut seen);
                    if let (false, Some(text)) = (broken, text) {
                        last_good.insert(file.clone(), text);
                    }
                }
            }
            documents.insert(file, cache);
        }
        self.tracked = seen;
        self.last_good = last_good;
        self.documents = documents;
        diagnostics.append(&mut resources.diagnostics);
        Loaded {
            resources,
            diagnostics,
        }
    }

    /// The outcome of every document of `text`, in order: from `previous` when the document's
    /// text is unchanged (and its stamp would be), else parsed (in parallel when there are many).
    /// Every outcome used is put in `cache`.
    fn read_documents(
        &mut self,
        text: &str,
        origin: &str,
        now: &str,
        previous: &DocCache,
        cache: &mut DocCache,
    ) -> Vec<(usize, Arc<CachedDoc>)> {
        let chunks = yaml::split(text);
        let mut docs: Vec<(usize, u64, Option<Arc<CachedDoc>>)> = Vec::with_capacity(chunks.len());
        let mut misses = Vec::new();
        for (slot, chunk) in chunks.iter().enumerate() {
            let hash = text_hash(&chunk.text);
            let found = cache
                .get(&hash)
                .or_else(|| previous.get(&hash))
                .filter(|d| d.len == chunk.text.len() && d.reusable(&self.tracked))
                .map(|d| d.at_document(chunk.index));
            if found.is_none() {
                misses.push(slot);
            }
            docs.push((chunk.index, hash, found));
        }
        self.parsed += misses.len();
        let parse_one = |&slot: &usize| {
            let chunk: &yaml::Chunk<'_> = &chunks[slot];
            let doc = CachedDoc {
                len: chunk.text.len(),
                outcome: read_document(&self.tracked, &chunk.text, chunk.index, origin, now),
            };
            (slot, Arc::new(doc))
        };
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parsed: Vec<(usize, Arc<CachedDoc>)> =
            if workers > 1 && misses.len() >= PARALLEL_MIN_DOCUMENTS {
                let per_worker = misses.len().div_ceil(workers);
                std::thread::scope(|scope| {
                    let handles: Vec<_> = misses
                        .chunks(per_worker)
                        .map(|part| scope.spawn(|| part.iter().map(parse_one).collect::<Vec<_>>()))
                        .collect();
                    handles
                        .into_iter()
                        .flat_map(|h| match h.join() {
                            Ok(done) => done,
                            Err(panic) => std::panic::resume_unwind(panic),
                        })
                        .collect()
                })
            } else {
                misses.iter().map(parse_one).collect()
            };
        for (slot, doc) in parsed {
            docs[slot].2 = Some(doc);
        }
        docs.into_iter()
            .filter_map(|(index, hash, doc)| {
                let doc = doc?;
                cache.insert(hash, doc.clone());
                Some((index, doc))
            })
            .collect()
    }
}

/// Adds one file's documents to `into` (problems to its diagnostics), and their stamps to `seen`.
fn add_documents(
    into: &mut Resources,
    docs: &[(usize, Arc<CachedDoc>)],
    origin: &str,
    seen: &mut HashMap<Identity, Tracked>,
) {
    for (index, doc) in docs {
        let Outcome::Read { stamped, entry } = &doc.outcome else {
            continue;
        };
        if let Some(stamped) = stamped {
            seen.insert(stamped.0.clone(), stamped.1.clone());
        }
        match entry {
            Ok(entry) => into.insert(entry.clone()),
            Err(e) => into
                .diagnostics
                .push(Diagnostic::document(origin, *index, e.to_string())),
        }
    }
}

/// Parses, stamps and reads one document.
fn read_document(
    tracked: &HashMap<Identity, Tracked>,
    text: &str,
    index: usize,
    origin: &str,
    now: &str,
) -> Outcome {
    match yaml::parse(text) {
        Ok(None) => Outcome::Empty,
        Err(message) => Outcome::Unparseable(message),
        Ok(Some(mut value)) => {
            let stamped = stamp(tracked, &mut value, now).map(Box::new);
            Outcome::Read {
                stamped,
                entry: Entry::build(value, origin, index),
            }
        }
    }
}

/// The hash a document's text is remembered by.
fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Fills in generation, creationTimestamp and namespace, as described in the module docs, from
/// what the previous load `tracked`; returns the object's identity and stamp.
fn stamp(
    tracked: &HashMap<Identity, Tracked>,
    value: &mut Value,
    now: &str,
) -> Option<(Identity, Tracked)> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind_name = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let kind = Kind::from_type(api_version, kind_name)?;
    let group = api_version
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or("")
        .to_string();
    let content = content_hash(value);
    let metadata = value.get_mut("metadata").and_then(Value::as_object_mut)?;
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)?;
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
    let previous = tracked.get(&identity);

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
    Some((
        identity,
        Tracked {
            content,
            generation,
            created,
        },
    ))
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
/// the returned channel once per settled burst of changes: [`SETTLE`] of quiet after a completed
/// write (close after writing, rename, removal), [`DEBOUNCE`] of quiet while a file is still
/// being written. A burst of writes is reported at most twice: once for its first write (when
/// the writes are further apart than [`SETTLE`]) and once when it has settled.
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

    let (raw_tx, raw_rx) = std_mpsc::channel::<Change>();
    let filter = targets.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            let _ = raw_tx.send(Change::Written);
            return;
        };
        let Some(change) = classify(&event.kind) else {
            return;
        };
        if event.paths.iter().any(|p| filter.concerns(p)) {
            let _ = raw_tx.send(change);
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

/// What a file system event says about the state of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// A write is complete: the file was closed after writing, renamed into place or removed
    /// (or the watcher reported an error: reading now is the safe choice).
    Written,
    /// The file is being written: more may follow.
    Writing,
}

/// The [`Change`] an event kind tells, or `None` for events that change nothing (reads).
fn classify(kind: &EventKind) -> Option<Change> {
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Change::Written),
        EventKind::Access(_) => None,
        EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => Some(Change::Written),
        // Data, metadata, creation (the content follows) and anything unknown.
        _ => Some(Change::Writing),
    }
}

/// Turns raw change signals into one `()` per settled burst: the quiet period after the last
/// signal is [`SETTLE`] when it completed a write ([`BURST_SETTLE`] when the last report is
/// less than that long ago), else [`DEBOUNCE`]. Ends when the watcher is dropped or the receiver
/// is closed.
fn debounce(raw: std_mpsc::Receiver<Change>, tx: mpsc::Sender<()>) {
    let mut reported: Option<std::time::Instant> = None;
    while let Ok(mut last) = raw.recv() {
        // A change starting soon after the last report continues a burst.
        let in_burst = reported.is_some_and(|at| at.elapsed() < 2 * BURST_SETTLE);
        loop {
            let quiet = match last {
                Change::Written if in_burst => BURST_SETTLE,
                Change::Written => SETTLE,
                Change::Writing => DEBOUNCE,
            };
            match raw.recv_timeout(quiet) {
                Ok(change) => last = change,
                Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        reported = Some(std::time::Instant::now());
        if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
            return;
        }
        tracing::debug!("watched files changed");
    }
}
