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

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::diagnostic::Diagnostic;
use crate::resources::{DocumentError, Entry, Read, Resources, Stamp};
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

/// Identity of an object across loads: API group, kind, namespace and name. Shared between the
/// cached document that stamped it and the source's tracking (no copy per load).
type Identity = Arc<(String, &'static str, String, String)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tracked {
    /// A hash of the typed content (everything but `metadata` and `status`, see
    /// [`Stamp::content`]): the content is not kept, only whether it changed matters.
    content: u64,
    generation: i64,
    created: Timestamp,
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
    /// Parsed and stamped: the identity and stamp given (none for documents that are not an
    /// object of a typed kind), and the object or why it is not one.
    Read {
        stamped: Option<Stamped>,
        entry: Result<Entry, DocumentError>,
    },
}

/// The stamp of an object: what the tracking remembers of it, and which fields the document
/// gave itself (those are never stamped).
#[derive(Clone, Debug)]
struct Stamped {
    identity: Identity,
    tracked: Tracked,
    given_generation: bool,
    given_created: bool,
}

impl CachedDoc {
    /// Whether reading the same text again now would give the same outcome: always, unless
    /// stamping depended on the previous load's state and that state has changed since.
    fn reusable(&self, tracked: &HashMap<Identity, Tracked>) -> bool {
        match &self.outcome {
            Outcome::Read {
                stamped: Some(stamped),
                ..
            } => tracked.get(&stamped.identity) == Some(&stamped.tracked),
            _ => true,
        }
    }

    /// The same document stamped again against `tracked` (when it is not
    /// [`CachedDoc::reusable`]): the object is copied and its stamped fields filled in anew;
    /// the text is not parsed again.
    fn restamped(&self, tracked: &HashMap<Identity, Tracked>, now: Timestamp) -> CachedDoc {
        let outcome = match &self.outcome {
            Outcome::Read {
                stamped: Some(old),
                entry: Ok(entry),
            } => {
                let mut entry = entry.clone();
                let stamped = entry.stamp(|s| {
                    if !old.given_generation {
                        s.meta.generation = None;
                    }
                    if !old.given_created {
                        s.meta.creation_timestamp = None;
                    }
                    stamp(tracked, s, now)
                });
                Outcome::Read {
                    stamped,
                    entry: Ok(entry),
                }
            }
            Outcome::Empty => Outcome::Empty,
            Outcome::Unparseable(m) => Outcome::Unparseable(m.clone()),
            Outcome::Read { stamped, entry } => Outcome::Read {
                stamped: stamped.clone(),
                entry: entry.clone(),
            },
        };
        CachedDoc {
            len: self.len,
            outcome,
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
    /// Each file's documents (index and text hash) in its last good load, used again when the
    /// file breaks; their outcomes stay in `documents` meanwhile (the text is not kept).
    last_good: HashMap<PathBuf, Vec<(usize, u64)>>,
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
        let now = Timestamp::from_second(now.as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
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
                    let docs = self.read_documents(&text, &origin, now, &previous, &mut cache);
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
            for (index, _, doc) in &docs {
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
                    let good_docs: Vec<_> = good
                        .iter()
                        .filter_map(|&(index, hash)| {
                            let doc = cache.get(&hash).or_else(|| previous.get(&hash))?;
                            let doc = self.current(doc, index, now);
                            cache.insert(hash, doc.clone());
                            Some((index, hash, doc))
                        })
                        .collect();
                    add_documents(&mut resources, &good_docs, &origin, &mut seen);
                    last_good.insert(file.clone(), good);
                }
                _ => {
                    add_documents(&mut resources, &docs, &origin, &mut seen);
                    if !broken {
                        let good = docs.iter().map(|&(index, hash, _)| (index, hash));
                        last_good.insert(file.clone(), good.collect());
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

    /// `doc` as found in the cache, for document `index` of this load: shared when its stamp
    /// still holds, else stamped again.
    fn current(&self, doc: &Arc<CachedDoc>, index: usize, now: Timestamp) -> Arc<CachedDoc> {
        if doc.reusable(&self.tracked) {
            doc.at_document(index)
        } else {
            Arc::new(doc.restamped(&self.tracked, now)).at_document(index)
        }
    }

    /// The outcome of every document of `text`, in order, with its text's hash: from
    /// `previous` when the document's text is unchanged (stamped again if its stamp would
    /// differ), else parsed (in parallel when there are many). Every outcome used is put in
    /// `cache`.
    fn read_documents(
        &mut self,
        text: &str,
        origin: &str,
        now: Timestamp,
        previous: &DocCache,
        cache: &mut DocCache,
    ) -> Vec<(usize, u64, Arc<CachedDoc>)> {
        let chunks = yaml::split(text);
        let mut docs: Vec<(usize, u64, Option<Arc<CachedDoc>>)> = Vec::with_capacity(chunks.len());
        let mut misses = Vec::new();
        for (slot, chunk) in chunks.iter().enumerate() {
            let hash = text_hash(&chunk.text);
            let found = cache
                .get(&hash)
                .or_else(|| previous.get(&hash))
                .filter(|d| d.len == chunk.text.len())
                .map(|d| self.current(d, chunk.index, now));
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
                Some((index, hash, doc))
            })
            .collect()
    }
}

/// Adds one file's documents to `into` (problems to its diagnostics), and their stamps to `seen`.
fn add_documents(
    into: &mut Resources,
    docs: &[(usize, u64, Arc<CachedDoc>)],
    origin: &str,
    seen: &mut HashMap<Identity, Tracked>,
) {
    for (index, _, doc) in docs {
        let Outcome::Read { stamped, entry } = &doc.outcome else {
            continue;
        };
        if let Some(stamped) = stamped {
            seen.insert(stamped.identity.clone(), stamped.tracked);
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
    now: Timestamp,
) -> Outcome {
    match Entry::read_yaml(text, origin, index) {
        Read::Empty => Outcome::Empty,
        Read::Unparseable(message) => Outcome::Unparseable(message),
        Read::Entry(Ok(mut entry)) => Outcome::Read {
            stamped: entry.stamp(|s| stamp(tracked, s, now)),
            entry: Ok(entry),
        },
        Read::Entry(Err(e)) => Outcome::Read {
            stamped: None,
            entry: Err(e),
        },
    }
}

/// The hash a document's text is remembered by.
fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// Fills in generation and creationTimestamp, as described in the module docs, from what the
/// previous load `tracked` (the namespace is already defaulted); returns the object's identity
/// and stamp.
fn stamp(tracked: &HashMap<Identity, Tracked>, object: Stamp<'_>, now: Timestamp) -> Stamped {
    let Stamp {
        group,
        kind,
        meta,
        content,
    } = object;
    let given_generation = meta.generation.is_some();
    let given_created = meta.creation_timestamp.is_some();
    let identity = Arc::new((
        group.to_string(),
        kind.as_str(),
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    ));
    let previous = tracked.get(&identity);
    let generation = *meta.generation.get_or_insert_with(|| match previous {
        Some(p) if p.content == content => p.generation,
        Some(p) => p.generation + 1,
        None => 1,
    });
    let created = meta
        .creation_timestamp
        .get_or_insert_with(|| Time(previous.map_or(now, |p| p.created)))
        .0;
    Stamped {
        identity,
        tracked: Tracked {
            content,
            generation,
            created,
        },
        given_generation,
        given_created,
    }
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
