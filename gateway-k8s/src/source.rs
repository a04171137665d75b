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
    /// [`Loaded::diagnostics`]. Shared with the source, which patches it on the next load when
    /// only some documents changed (copying it first if this `Arc` is still held then).
    pub resources: Arc<Resources>,
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

/// One file's documents by the hash of their text ([`text_hash`]).
type DocCache = HashMap<TextHash, Arc<CachedDoc>>;

/// A 128-bit hash of a text (see [`text_hash`]).
type TextHash = u128;

/// What the last load gave when it was clean (no diagnostic at all: no unreadable file, no
/// broken document, no object defined twice), kept so that the next load can patch it: each
/// file's text hash and its documents in order, and the objects served.
#[derive(Debug)]
struct Served {
    resources: Arc<Resources>,
    files: Vec<FileDocs>,
}

/// A file as the last load read it.
#[derive(Debug)]
struct FileDocs {
    path: PathBuf,
    /// The hash and length of the whole text.
    text: (TextHash, usize),
    /// Every document of the text, in order, with the hash of its text.
    docs: Vec<(TextHash, Arc<CachedDoc>)>,
}

/// A document of a file whose outcome changed, as found by [`FileSource::patch`].
struct Patch {
    /// The file (its index in [`Served::files`]) and the document's position in it.
    file: usize,
    position: usize,
    hash: TextHash,
    doc: Arc<CachedDoc>,
}

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
    last_good: HashMap<PathBuf, Vec<(usize, TextHash)>>,
    /// Each file's documents from the last load (its current and last good texts).
    documents: HashMap<PathBuf, DocCache>,
    /// Documents parsed (not taken from the cache) by the last load.
    parsed: usize,
    /// The last load's result when it was clean, for the next load to patch.
    served: Option<Served>,
    /// Whether a load may patch the last one (always, but in tests comparing with full loads).
    patching: bool,
    /// Whether the last load patched the one before.
    last_patched: bool,
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
            served: None,
            patching: true,
            last_patched: false,
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
    ///
    /// Every file is read and hashed whole ([`text_hash`]). When the last load was clean (no
    /// diagnostic) and this one reads the same files, a file whose text hash is unchanged is
    /// skipped; a changed file is split and its documents hashed, and when each changed document
    /// still defines the object it defined before (or is still empty), the kept objects are
    /// patched in place: only those objects are replaced, nothing else is built. Any other
    /// change (a document added, removed, moved, broken, or defining another object; a file
    /// added, removed or unreadable) reads every file again, taking unchanged documents from the
    /// cache.
    pub fn load_at(&mut self, now: Timestamp) -> Loaded {
        let now = Timestamp::from_second(now.as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
        let started = std::time::Instant::now();
        let (files, listing) = self.files();
        let texts: Vec<(PathBuf, std::io::Result<String>)> = files
            .into_iter()
            .map(|file| {
                let text = std::fs::read_to_string(&file);
                (file, text)
            })
            .collect();
        let read = started.elapsed();
        self.parsed = 0;
        self.last_patched = false;
        if listing.is_empty()
            && let Some(loaded) = self.patch(&texts, now)
        {
            self.last_patched = true;
            tracing::debug!(
                read_us = read.as_micros() as u64,
                patch_us = (started.elapsed() - read).as_micros() as u64,
                parsed = self.parsed,
                "configuration files patched"
            );
            return loaded;
        }
        let loaded = self.load_all(texts, listing, now);
        tracing::debug!(
            read_us = read.as_micros() as u64,
            load_us = (started.elapsed() - read).as_micros() as u64,
            parsed = self.parsed,
            "configuration files read in full"
        );
        loaded
    }

    /// Patches the last load's objects with the documents of `texts` that changed, when that
    /// gives what a full load would (see [`FileSource::load_at`]); `None` otherwise, with
    /// nothing changed but the documents parsed put in the cache for the full load.
    fn patch(
        &mut self,
        texts: &[(PathBuf, std::io::Result<String>)],
        now: Timestamp,
    ) -> Option<Loaded> {
        if !self.patching {
            return None;
        }
        let served = self.served.as_ref()?;
        if served.files.len() != texts.len() {
            return None;
        }
        let mut patches: Vec<Patch> = Vec::new();
        let mut parsed = 0;
        let mut texts_changed: Vec<(usize, (TextHash, usize))> = Vec::new();
        let mut fits = true;
        'files: for (i, ((path, text), before)) in texts.iter().zip(&served.files).enumerate() {
            let Ok(text) = text else {
                fits = false;
                break;
            };
            if *path != before.path {
                fits = false;
                break;
            }
            let whole = (text_hash(text.as_bytes()), text.len());
            if whole == before.text {
                continue;
            }
            texts_changed.push((i, whole));
            let chunks = yaml::split(text);
            if chunks.len() != before.docs.len() {
                fits = false;
                break;
            }
            let origin = path.display().to_string();
            let cache = self.documents.get(path);
            for (position, (chunk, (old_hash, old))) in chunks.iter().zip(&before.docs).enumerate()
            {
                let hash = text_hash(chunk.text.as_bytes());
                if hash == *old_hash && old.len == chunk.text.len() {
                    continue;
                }
                if patches.len() >= PARALLEL_MIN_DOCUMENTS {
                    // Many changed documents: the full load parses them in parallel.
                    fits = false;
                    break 'files;
                }
                let found = cache
                    .and_then(|c| c.get(&hash))
                    .filter(|d| d.len == chunk.text.len())
                    .map(|d| self.current(d, chunk.index, now));
                let doc = match found {
                    Some(doc) => doc,
                    None => {
                        parsed += 1;
                        Arc::new(CachedDoc {
                            len: chunk.text.len(),
                            outcome: read_document(
                                &self.tracked,
                                &chunk.text,
                                chunk.index,
                                &origin,
                                now,
                            ),
                        })
                    }
                };
                let same = same_object(&old.outcome, &doc.outcome);
                patches.push(Patch {
                    file: i,
                    position,
                    hash,
                    doc,
                });
                if !same {
                    fits = false;
                    break 'files;
                }
            }
        }
        self.parsed += parsed;
        if !fits {
            // The full load finds the documents parsed here in the cache.
            for patch in patches {
                let path = &served.files[patch.file].path;
                if let Some(cache) = self.documents.get_mut(path) {
                    cache.insert(patch.hash, patch.doc);
                }
            }
            return None;
        }
        let served = self.served.as_mut()?;
        for (i, whole) in texts_changed {
            served.files[i].text = whole;
        }
        for Patch {
            file,
            position,
            hash,
            doc,
        } in patches
        {
            let entry = &mut served.files[file];
            let (old_hash, old) = std::mem::replace(&mut entry.docs[position], (hash, doc.clone()));
            if let (
                Outcome::Read {
                    stamped,
                    entry: Ok(_),
                },
                Outcome::Read {
                    stamped: new_stamped,
                    entry: Ok(new_entry),
                },
            ) = (&old.outcome, &doc.outcome)
            {
                if let Some(stamped) = stamped {
                    self.tracked.remove(&stamped.identity);
                }
                if let Some(stamped) = new_stamped {
                    self.tracked
                        .insert(stamped.identity.clone(), stamped.tracked);
                }
                if Arc::strong_count(&served.resources) > 1 {
                    // The previous load is still held (its status being rendered, say).
                    tracing::debug!("the served objects are copied before they are patched");
                }
                let replaced = Arc::make_mut(&mut served.resources).replace(new_entry.clone());
                debug_assert!(replaced, "a patched object is one the last load served");
            }
            if let Some(cache) = self.documents.get_mut(&entry.path) {
                // Empty documents can share a text: only an object's document is surely unique.
                if matches!(old.outcome, Outcome::Read { .. }) {
                    cache.remove(&old_hash);
                }
                cache.insert(hash, doc);
            }
            if let Some(good) = self.last_good.get_mut(&entry.path)
                && let Some(slot) = good.get_mut(position)
            {
                slot.1 = hash;
            }
        }
        Some(Loaded {
            resources: served.resources.clone(),
            diagnostics: Vec::new(),
        })
    }

    /// Reads every file of `texts` (as read by [`FileSource::load_at`]), taking unchanged
    /// documents from the cache.
    fn load_all(
        &mut self,
        texts: Vec<(PathBuf, std::io::Result<String>)>,
        mut diagnostics: Vec<Diagnostic>,
        now: Timestamp,
    ) -> Loaded {
        self.served = None;
        let mut resources = Resources::new();
        let mut seen: HashMap<Identity, Tracked> = HashMap::with_capacity(self.tracked.len());
        let mut last_good = HashMap::new();
        let mut documents = HashMap::new();
        let mut served_files = Vec::with_capacity(texts.len());
        for (file, text) in texts {
            let origin = file.display().to_string();
            let previous = self.documents.remove(&file).unwrap_or_default();
            let mut cache = DocCache::with_capacity(previous.len());
            let (text, docs) = match text {
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
            if let Some(text) = text {
                served_files.push(FileDocs {
                    path: file.clone(),
                    text: (text_hash(text.as_bytes()), text.len()),
                    docs: docs.into_iter().map(|(_, hash, doc)| (hash, doc)).collect(),
                });
            }
            documents.insert(file, cache);
        }
        self.tracked = seen;
        self.last_good = last_good;
        self.documents = documents;
        diagnostics.append(&mut resources.diagnostics);
        let resources = Arc::new(resources);
        if diagnostics.is_empty() {
            self.served = Some(Served {
                resources: resources.clone(),
                files: served_files,
            });
        }
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
    ) -> Vec<(usize, TextHash, Arc<CachedDoc>)> {
        let chunks = yaml::split(text);
        let mut docs: Vec<(usize, TextHash, Option<Arc<CachedDoc>>)> =
            Vec::with_capacity(chunks.len());
        let mut misses = Vec::new();
        for (slot, chunk) in chunks.iter().enumerate() {
            let hash = text_hash(chunk.text.as_bytes());
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
    docs: &[(usize, TextHash, Arc<CachedDoc>)],
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

/// The hash a document's text (and a file's whole text) is remembered by: XXH3 with 128 bits,
/// a fast non-cryptographic hash (several GB/s, so hashing a 4 MB file whole and then each of
/// its documents costs well under a millisecond). The text itself is not kept, so two texts
/// are taken to be the same when their hashes and lengths are equal: with 128 bits the chance
/// that two different texts among n collide is about n² / 2¹²⁹, under 10⁻²⁸ for a million
/// documents. The files are the operator's own, not adversarial input (XXH3 is not meant to
/// resist crafted collisions; a writer able to craft them can write the file anyway).
fn text_hash(text: &[u8]) -> TextHash {
    xxhash_rust::xxh3::xxh3_128(text)
}

/// Whether `new` is read into the object `old` was (or both are empty), so that the load's
/// objects can be patched with it: both objects with the same kind and key, or both empty.
fn same_object(old: &Outcome, new: &Outcome) -> bool {
    match (old, new) {
        (Outcome::Empty, Outcome::Empty) => true,
        (Outcome::Read { entry: Ok(old), .. }, Outcome::Read { entry: Ok(new), .. }) => {
            old.names_same_object(new)
        }
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Kind;

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "gateway-k8s-unit-{tag}-{}-{}",
                std::process::id(),
                Timestamp::now().as_nanosecond()
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Everything a load tells, as text: each object in input order (kind, key, where it was
    /// read, its echo with the stamped metadata), then every diagnostic.
    fn snapshot(loaded: &Loaded) -> Vec<String> {
        let r = &loaded.resources;
        let mut out = Vec::new();
        for (kind, key) in r.order() {
            let echo = r.document(*kind, key).expect("ordered object present");
            let (origin, document) = match kind {
                Kind::HttpRoute => (&r.http_routes[key].origin, r.http_routes[key].document),
                Kind::Gateway => (&r.gateways[key].origin, r.gateways[key].document),
                Kind::Service => (&r.services[key].origin, r.services[key].document),
                Kind::Namespace => (&r.namespaces[key].origin, r.namespaces[key].document),
                _ => panic!("unexpected kind {kind}"),
            };
            out.push(format!("{kind} {key} {origin}#{document} {echo}"));
        }
        for key in r.other_order() {
            let o = &r.others[key];
            out.push(format!("{key} {}#{} {}", o.origin, o.document, o.object));
        }
        out.extend(loaded.diagnostics.iter().map(|d| format!("! {d}")));
        out
    }

    fn route(name: &str, path: &str) -> String {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n"
        )
    }

    fn service(name: &str, port: u16) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: {port}}}]}}\n"
        )
    }

    fn config_map(name: &str, value: &str) -> String {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{k: {value}}}\n"
        )
    }

    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: c\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n";

    /// A load that patches gives exactly what a load reading everything gives, through a series
    /// of changes of every sort; the changes of documents that keep their object are patched.
    #[test]
    fn patched_loads_equal_full_loads() {
        let dir = TempDir::new("patch");
        let a = dir.0.join("a.yaml");
        let b = dir.0.join("b.yaml");
        let write = |path: &Path, docs: &[String]| {
            std::fs::write(path, docs.join("---\n")).expect("write");
        };
        let mut patching = FileSource::new(vec![dir.0.clone()]);
        let mut full = FileSource::new(vec![dir.0.clone()]);
        full.patching = false;
        let mut second = 1_000;
        let mut step = |name: &str, expect_patched: Option<bool>| {
            second += 1_000;
            let now = Timestamp::from_second(second).expect("timestamp");
            let p = patching.load_at(now);
            let patched = patching.last_patched;
            let f = full.load_at(now);
            assert!(!full.last_patched);
            assert_eq!(snapshot(&p), snapshot(&f), "step {name}");
            if let Some(expected) = expect_patched {
                assert_eq!(patched, expected, "step {name}: patched");
            }
            (p, patching.parsed_documents())
        };
        let s = |t: &str| t.to_string();

        write(
            &a,
            &[
                s(GATEWAY),
                route("r1", "/1"),
                route("r2", "/2"),
                s("# empty\n"),
                route("r3", "/3"),
            ],
        );
        write(&b, &[service("svc", 80), config_map("cm", "v1")]);
        step("initial", Some(false));
        step("unchanged", Some(true));

        write(
            &a,
            &[
                s(GATEWAY),
                route("r1", "/1"),
                route("r2", "/2b"),
                s("# empty\n"),
                route("r3", "/3"),
            ],
        );
        let (loaded, parsed) = step("a route changed", Some(true));
        assert_eq!(parsed, 1);
        let meta = &loaded.resources.http_routes[&crate::ObjectKey::new("default", "r2")]
            .object
            .metadata;
        assert_eq!(meta.generation, Some(2));

        write(
            &a,
            &[
                s(GATEWAY),
                route("r1", "/1"),
                route("r2", "/2b"),
                s("# other comment\n"),
                route("r3", "/3c"),
            ],
        );
        step("an empty document and a route changed", Some(true));

        write(&b, &[service("svc", 81), config_map("cm", "v2")]);
        step("a service and an untyped object changed", Some(true));

        write(
            &a,
            &[
                s(GATEWAY),
                route("r1", "/1"),
                service("r2", 80),
                s("# other comment\n"),
                route("r3", "/3c"),
            ],
        );
        step("a route changed to another kind", Some(false));

        write(
            &a,
            &[
                s(GATEWAY),
                route("r1", "/1"),
                route("r2", "/2"),
                s("# other comment\n"),
                route("r3", "/3c"),
            ],
        );
        step("and back", Some(false));

        write(
            &a,
            &[
                s(GATEWAY),
                route("r2", "/2"),
                route("r1", "/1"),
                s("# other comment\n"),
                route("r3", "/3c"),
            ],
        );
        step("two documents swapped", Some(false));

        write(
            &a,
            &[
                s(GATEWAY),
                route("r2", "/2"),
                route("r1", "/1"),
                s("# other comment\n"),
                route("r4", "/3c"),
            ],
        );
        step("a route renamed", Some(false));

        write(
            &a,
            &[
                s(GATEWAY),
                route("r2", "/2"),
                s("# other comment\n"),
                route("r4", "/3c"),
            ],
        );
        step("a document removed", Some(false));

        write(
            &a,
            &[
                s(GATEWAY),
                route("r2", "/2"),
                s("# other comment\n"),
                route("r4", "/3c"),
                route("r5", "/5"),
            ],
        );
        step("a document added", Some(false));

        write(
            &b,
            &[
                service("svc", 81),
                config_map("cm", "v2"),
                route("r2", "/dup"),
            ],
        );
        step("a route defined in two files", Some(false));
        write(
            &b,
            &[
                service("svc", 81),
                config_map("cm", "v2"),
                route("r2", "/dup2"),
            ],
        );
        step("the duplicate changed", Some(false));
        write(
            &a,
            &[
                s(GATEWAY),
                route("r2", "/2x"),
                s("# other comment\n"),
                route("r4", "/3c"),
                route("r5", "/5"),
            ],
        );
        step("the shadowed one changed", Some(false));
        write(&b, &[service("svc", 81), config_map("cm", "v2")]);
        step("the duplicate removed", Some(false));
        step("clean again", Some(true));

        write(&b, &[service("svc", 81), s("kind: [unclosed\n")]);
        step("a broken document", Some(false));
        step("still broken", Some(false));
        write(&b, &[service("svc", 82), config_map("cm", "v3")]);
        step("fixed", Some(false));

        std::fs::remove_file(&b).expect("remove");
        step("a file deleted", Some(false));
        write(&b, &[service("svc", 82), config_map("cm", "v3")]);
        step("the file back", Some(false));

        write(
            &a,
            &[
                s(GATEWAY).replace("{name: gw}", "{name: gw, labels: {x: y}}"),
                route("r2", "/2x"),
                s("# other comment\n"),
                route("r4", "/3c"),
                route("r5", "/5"),
            ],
        );
        step("metadata only changed", Some(true));
        write(
            &a,
            &[
                s(GATEWAY),
                route("r2", "/2x"),
                s("# other comment\n"),
                route("r4", "/3c"),
                route("r5", "/5"),
            ],
        );
        step("and back", Some(true));
    }
}
