//! The file source between loads: what a change of some documents gives, whether the source
//! patches its kept objects (a document whose object stays the same) or reads everything again
//! (documents removed, swapped, turned into another kind, files deleted, objects defined twice).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gateway_k8s::ObjectKey;
use gateway_k8s::source::{FileSource, Loaded};
use k8s_openapi::jiff::Timestamp;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gateway-k8s-patch-{tag}-{}-{}",
            std::process::id(),
            Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, docs: &[String]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, docs.join("---\n")).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ts(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("timestamp")
}

fn route(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n"
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 80}}]}}\n"
    )
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name)
}

fn path_of(loaded: &Loaded, name: &str) -> String {
    let route = &loaded.resources.http_routes[&key(name)];
    let rules = route.object.spec.rules.as_ref().expect("rules");
    let matches = rules[0].matches.as_ref().expect("matches");
    let path = matches[0].path.as_ref().expect("path");
    path.value.clone().expect("path value")
}

fn generation(loaded: &Loaded, name: &str) -> Option<i64> {
    loaded.resources.http_routes[&key(name)]
        .object
        .metadata
        .generation
}

fn order(loaded: &Loaded) -> Vec<String> {
    let r = &loaded.resources;
    r.order()
        .iter()
        .map(|(k, key)| format!("{k} {}", key.name))
        .collect()
}

#[test]
fn a_changed_document_replaces_only_its_object_and_earlier_loads_stay_as_they_were() {
    let dir = TempDir::new("one");
    let docs = |two: &str| {
        vec![
            route("one", "/one"),
            route("two", two),
            route("three", "/3"),
        ]
    };
    dir.write("all.yaml", &docs("/two"));
    let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
    let first = source.load_at(ts(1_000));
    assert!(first.diagnostics.is_empty(), "{:?}", first.diagnostics);

    dir.write("all.yaml", &docs("/two-b"));
    let second = source.load_at(ts(2_000));
    assert_eq!(source.parsed_documents(), 1);
    assert!(second.diagnostics.is_empty(), "{:?}", second.diagnostics);
    assert_eq!(path_of(&second, "two"), "/two-b");
    assert_eq!(generation(&second, "two"), Some(2));
    assert_eq!(order(&second), order(&first));
    for unchanged in ["one", "three"] {
        assert!(Arc::ptr_eq(
            &first.resources.http_routes[&key(unchanged)],
            &second.resources.http_routes[&key(unchanged)]
        ));
        assert_eq!(generation(&second, unchanged), Some(1));
    }
    // The first load's objects were not touched by the second.
    assert_eq!(path_of(&first, "two"), "/two");
    assert_eq!(generation(&first, "two"), Some(1));

    // Written again with the same text: nothing read.
    dir.write("all.yaml", &docs("/two-b"));
    let third = source.load_at(ts(3_000));
    assert_eq!(source.parsed_documents(), 0);
    // The very same store: nothing was built.
    assert!(Arc::ptr_eq(&second.resources, &third.resources));
    assert!(Arc::ptr_eq(
        &second.resources.http_routes[&key("two")],
        &third.resources.http_routes[&key("two")]
    ));
}

#[test]
fn a_removed_document_removes_its_object() {
    let dir = TempDir::new("removed");
    dir.write(
        "all.yaml",
        &[route("one", "/1"), route("two", "/2"), route("three", "/3")],
    );
    let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
    let first = source.load_at(ts(1_000));
    dir.write("all.yaml", &[route("one", "/1"), route("three", "/3")]);
    let second = source.load_at(ts(2_000));
    assert_eq!(source.parsed_documents(), 0);
    assert!(!second.resources.http_routes.contains_key(&key("two")));
    assert_eq!(order(&second), vec!["HTTPRoute one", "HTTPRoute three"]);
    assert!(Arc::ptr_eq(
        &first.resources.http_routes[&key("one")],
        &second.resources.http_routes[&key("one")]
    ));
    assert_eq!(second.resources.http_routes[&key("three")].document, 1);
    assert_eq!(generation(&second, "three"), Some(1));
}

#[test]
fn a_document_changed_to_another_kind_replaces_the_object() {
    let dir = TempDir::new("kind");
    dir.write("all.yaml", &[route("one", "/1"), route("two", "/2")]);
    let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
    source.load_at(ts(1_000));
    dir.write("all.yaml", &[route("one", "/1"), service("two")]);
    let second = source.load_at(ts(2_000));
    assert!(second.diagnostics.is_empty(), "{:?}", second.diagnostics);
    assert!(!second.resources.http_routes.contains_key(&key("two")));
    let svc = &second.resources.services[&key("two")];
    assert_eq!(svc.object.metadata.generation, Some(1));
    assert_eq!(
        svc.object.metadata.creation_timestamp.as_ref().map(|t| t.0),
        Some(ts(2_000))
    );
    assert_eq!(order(&second), vec!["HTTPRoute one", "Service two"]);

    // Back to a route: a new object again.
    dir.write("all.yaml", &[route("one", "/1"), route("two", "/2")]);
    let third = source.load_at(ts(3_000));
    assert!(third.resources.services.is_empty());
    assert_eq!(generation(&third, "two"), Some(1));
    assert_eq!(
        third.resources.http_routes[&key("two")]
            .object
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0),
        Some(ts(3_000))
    );
}

#[test]
fn swapped_documents_keep_their_objects_in_the_new_order() {
    let dir = TempDir::new("swap");
    dir.write(
        "all.yaml",
        &[route("one", "/1"), route("two", "/2"), route("three", "/3")],
    );
    let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
    source.load_at(ts(1_000));
    dir.write(
        "all.yaml",
        &[route("two", "/2"), route("one", "/1"), route("three", "/3")],
    );
    let second = source.load_at(ts(2_000));
    assert_eq!(source.parsed_documents(), 0);
    assert_eq!(
        order(&second),
        vec!["HTTPRoute two", "HTTPRoute one", "HTTPRoute three"]
    );
    assert_eq!(second.resources.http_routes[&key("two")].document, 0);
    assert_eq!(second.resources.http_routes[&key("one")].document, 1);
    for name in ["one", "two", "three"] {
        assert_eq!(generation(&second, name), Some(1), "{name}");
    }
}

#[test]
fn a_deleted_file_removes_its_objects_and_keeps_the_others() {
    let dir = TempDir::new("deleted");
    dir.write("a.yaml", &[route("one", "/1")]);
    let b = dir.write("b.yaml", &[route("two", "/2"), service("svc")]);
    let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
    let first = source.load_at(ts(1_000));
    assert_eq!(first.resources.len(), 3);
    std::fs::remove_file(&b).expect("remove");
    let second = source.load_at(ts(2_000));
    assert!(second.diagnostics.is_empty(), "{:?}", second.diagnostics);
    assert_eq!(order(&second), vec!["HTTPRoute one"]);
    assert!(Arc::ptr_eq(
        &first.resources.http_routes[&key("one")],
        &second.resources.http_routes[&key("one")]
    ));
    // An explicitly named file that is deleted is reported, and its objects are gone.
    let mut named = FileSource::new(vec![dir.path().join("a.yaml")]);
    named.load_at(ts(1_000));
    std::fs::remove_file(dir.path().join("a.yaml")).expect("remove");
    let gone = named.load_at(ts(2_000));
    assert!(gone.resources.is_empty());
    assert_eq!(gone.diagnostics.len(), 1, "{:?}", gone.diagnostics);
    assert!(gone.diagnostics[0].message.contains("cannot read"));
}

#[test]
fn an_object_defined_in_two_files_is_the_later_one() {
    let dir = TempDir::new("dup");
    dir.write("a.yaml", &[route("one", "/a"), route("other", "/o")]);
    dir.write("b.yaml", &[route("one", "/b")]);
    let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
    let first = source.load_at(ts(1_000));
    assert_eq!(path_of(&first, "one"), "/b");
    assert_eq!(first.diagnostics.len(), 1, "{:?}", first.diagnostics);
    assert!(first.diagnostics[0].message.contains("defined again"));
    assert!(first.diagnostics[0].origin.ends_with("b.yaml"));
    // First definition's position in the order.
    assert_eq!(order(&first), vec!["HTTPRoute one", "HTTPRoute other"]);

    // The earlier (replaced) definition changes: the later one still serves.
    dir.write("a.yaml", &[route("one", "/a2"), route("other", "/o")]);
    let second = source.load_at(ts(2_000));
    assert_eq!(path_of(&second, "one"), "/b");
    assert_eq!(second.diagnostics.len(), 1, "{:?}", second.diagnostics);

    // The later definition changes: it serves.
    dir.write("b.yaml", &[route("one", "/b2")]);
    let third = source.load_at(ts(3_000));
    assert_eq!(path_of(&third, "one"), "/b2");

    // The later one removed: the earlier serves, without a diagnostic.
    dir.write("b.yaml", &[service("svc")]);
    let fourth = source.load_at(ts(4_000));
    assert_eq!(path_of(&fourth, "one"), "/a2");
    assert!(fourth.diagnostics.is_empty(), "{:?}", fourth.diagnostics);

    // Clean again: a change is patched and only that document is read.
    dir.write("a.yaml", &[route("one", "/a3"), route("other", "/o")]);
    let fifth = source.load_at(ts(5_000));
    assert_eq!(source.parsed_documents(), 1);
    assert_eq!(path_of(&fifth, "one"), "/a3");
    assert!(Arc::ptr_eq(
        &fourth.resources.http_routes[&key("other")],
        &fifth.resources.http_routes[&key("other")]
    ));
}
