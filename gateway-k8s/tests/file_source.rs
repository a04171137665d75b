//! The file source: directories, generation bumps, creation times, diagnostics and watching.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gateway_k8s::ObjectKey;
use gateway_k8s::source::{FileSource, watch};
use k8s_openapi::jiff::Timestamp;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gateway-k8s-{tag}-{}-{}",
            std::process::id(),
            Timestamp::now().as_nanosecond()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GATEWAY_V1: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: ours
  listeners:
  - {name: http, port: 80, protocol: HTTP}
"#;

fn ts(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("timestamp")
}

#[test]
fn generation_creation_time_and_namespace_are_stamped() {
    let dir = TempDir::new("stamp");
    dir.write("gw.yaml", GATEWAY_V1);
    let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
    let key = ObjectKey::new("default", "gw");

    let first = source.load_at(ts(1_000));
    assert!(first.diagnostics.is_empty(), "{:?}", first.diagnostics);
    let meta = &first.resources.gateways[&key].object.metadata;
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    let created = meta.creation_timestamp.clone().expect("creationTimestamp");
    assert_eq!(created.0, ts(1_000));

    // Unchanged: same generation.
    let second = source.load_at(ts(2_000));
    assert_eq!(
        second.resources.gateways[&key].object.metadata.generation,
        Some(1)
    );

    // Spec changed: generation bumps, creation time stays.
    dir.write("gw.yaml", &GATEWAY_V1.replace("port: 80", "port: 81"));
    let third = source.load_at(ts(3_000));
    let meta = &third.resources.gateways[&key].object.metadata;
    assert_eq!(meta.generation, Some(2));
    assert_eq!(meta.creation_timestamp.as_ref(), Some(&created));

    // A label change is metadata, not spec.
    dir.write(
        "gw.yaml",
        &GATEWAY_V1
            .replace("port: 80", "port: 81")
            .replace("name: gw\n", "name: gw\n  labels: {a: b}\n"),
    );
    let fourth = source.load_at(ts(4_000));
    assert_eq!(
        fourth.resources.gateways[&key].object.metadata.generation,
        Some(2)
    );

    // Gone, then back: a new object.
    std::fs::remove_file(dir.path().join("gw.yaml")).expect("remove");
    assert!(source.load_at(ts(5_000)).resources.gateways.is_empty());
    dir.write("gw.yaml", GATEWAY_V1);
    let back = source.load_at(ts(6_000));
    let meta = &back.resources.gateways[&key].object.metadata;
    assert_eq!(meta.generation, Some(1));
    assert_eq!(
        meta.creation_timestamp.as_ref().map(|t| t.0),
        Some(ts(6_000))
    );
}

#[test]
fn explicit_metadata_is_kept() {
    let dir = TempDir::new("explicit");
    let file = dir.write(
        "gw.yaml",
        &GATEWAY_V1.replace(
            "name: gw\n",
            "name: gw\n  namespace: prod\n  generation: 7\n  creationTimestamp: \"2020-02-02T00:00:00Z\"\n",
        ),
    );
    let mut source = FileSource::new(vec![file]);
    let loaded = source.load_at(ts(1_000));
    let meta = &loaded.resources.gateways[&ObjectKey::new("prod", "gw")]
        .object
        .metadata;
    assert_eq!(meta.generation, Some(7));
    assert_eq!(
        meta.creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .as_deref(),
        Some("2020-02-02T00:00:00Z")
    );
}

#[test]
fn directories_are_read_recursively_in_order_and_bad_documents_are_diagnostics() {
    let dir = TempDir::new("dir");
    dir.write(
        "b.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n---\nkey: [unclosed\n",
    );
    dir.write(
        "a.yml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    );
    dir.write(
        "nested/c.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: c}\n",
    );
    dir.write("notes.txt", "not yaml: [");
    let source = FileSource::new(vec![
        dir.path().to_path_buf(),
        dir.path().join("missing.yaml"),
    ]);
    let (files, _) = source.files();
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(dir.path())
                .unwrap_or(f)
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        vec!["a.yml", "b.yaml", "nested/c.yaml", "missing.yaml"]
    );

    let mut source = source;
    let loaded = source.load();
    let order: Vec<&str> = loaded
        .resources
        .order()
        .iter()
        .map(|(_, k)| k.name.as_str())
        .collect();
    assert_eq!(order, vec!["a", "b"]);
    // A kind without a typed struct is kept untyped, not reported.
    let others: Vec<&str> = loaded
        .resources
        .other_order()
        .iter()
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(others, vec!["c"]);
    assert_eq!(loaded.diagnostics.len(), 2, "{:?}", loaded.diagnostics);
    let bad = loaded
        .diagnostics
        .iter()
        .find(|d| d.origin.ends_with("b.yaml"))
        .expect("diagnostic for b.yaml");
    assert_eq!(bad.document, Some(1));
    assert!(
        loaded
            .diagnostics
            .iter()
            .any(|d| d.origin.ends_with("missing.yaml") && d.document.is_none())
    );
}

#[tokio::test]
async fn watch_reports_settled_changes() {
    let dir = TempDir::new("watch");
    let file = dir.write("gw.yaml", GATEWAY_V1);
    let other_dir = TempDir::new("watch-dir");
    let (guard, mut changes) =
        watch(&[file.clone(), other_dir.path().to_path_buf()]).expect("watch");

    for port in 81..86 {
        std::fs::write(
            &file,
            GATEWAY_V1.replace("port: 80", &format!("port: {port}")),
        )
        .expect("write");
    }
    // A burst of writes is reported promptly and at most once more when it settles.
    let got = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
    assert_eq!(got, Ok(Some(())));
    let mut reports = 1;
    while let Ok(got) = tokio::time::timeout(Duration::from_millis(600), changes.recv()).await {
        assert_eq!(got, Some(()));
        reports += 1;
    }
    assert!(
        reports <= 2,
        "a burst of 5 writes gave {reports} notifications"
    );

    // Replacing the file by rename (as editors do) is seen.
    let tmp = dir.path().join(".gw.yaml.swp");
    std::fs::write(&tmp, GATEWAY_V1).expect("write tmp");
    std::fs::rename(&tmp, &file).expect("rename");
    let got = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
    assert_eq!(got, Ok(Some(())));

    // A new YAML file in a watched directory (even nested) is seen; other files are not.
    std::fs::write(other_dir.path().join("notes.txt"), "x").expect("write");
    let ignored = tokio::time::timeout(Duration::from_millis(600), changes.recv()).await;
    assert!(ignored.is_err(), "non-YAML files are ignored");
    std::fs::write(other_dir.path().join("new.yaml"), GATEWAY_V1).expect("write");
    let got = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
    assert_eq!(got, Ok(Some(())));

    // Dropping the guard closes the channel.
    drop(guard);
    let closed = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
    assert_eq!(closed, Ok(None));
}

#[test]
fn a_broken_file_keeps_its_last_good_objects_until_fixed() {
    let dir = TempDir::new("last-good");
    let other = "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n";
    let extra = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ignored}\n";
    dir.write("gw.yaml", &format!("{GATEWAY_V1}{extra}"));
    dir.write("ns.yaml", other);
    let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
    let key = ObjectKey::new("default", "gw");
    let port = |loaded: &gateway_k8s::source::Loaded| {
        loaded.resources.gateways[&key].object.spec.listeners[0].port
    };
    let kept = |loaded: &gateway_k8s::source::Loaded| {
        loaded
            .diagnostics
            .iter()
            .any(|d| d.origin.ends_with("gw.yaml") && d.message.contains("last good version"))
    };

    // A document of a kind without a typed struct is kept and does not make the file bad.
    let first = source.load_at(ts(1_000));
    assert_eq!(port(&first), 80);
    assert!(!kept(&first), "{:?}", first.diagnostics);

    // Not YAML: the Gateway from the last good version stays, and the problem is reported.
    dir.write("gw.yaml", "apiVersion: [unclosed\n");
    let broken = source.load_at(ts(2_000));
    assert_eq!(port(&broken), 80);
    assert!(kept(&broken), "{:?}", broken.diagnostics);
    assert!(
        broken
            .diagnostics
            .iter()
            .any(|d| d.message.contains("unparseable YAML"))
    );
    assert!(
        broken
            .resources
            .namespaces
            .contains_key(&ObjectKey::new("", "other"))
    );

    // Valid YAML, but one document breaks its kind's schema: the whole file waits.
    let bad_route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                     metadata: {name: r}\nspec: {rules: not-a-list}\n";
    dir.write(
        "gw.yaml",
        &format!("{}{bad_route}", GATEWAY_V1.replace("port: 80", "port: 81")),
    );
    let invalid = source.load_at(ts(3_000));
    assert_eq!(port(&invalid), 80);
    assert!(kept(&invalid), "{:?}", invalid.diagnostics);
    assert!(invalid.resources.http_routes.is_empty());
    // The kept object is unchanged, so its generation does not move.
    assert_eq!(
        invalid.resources.gateways[&key].object.metadata.generation,
        Some(1)
    );

    // Fixed: the new version applies.
    dir.write("gw.yaml", &GATEWAY_V1.replace("port: 80", "port: 81"));
    let fixed = source.load_at(ts(4_000));
    assert_eq!(port(&fixed), 81);
    assert!(!kept(&fixed));
    assert_eq!(
        fixed.resources.gateways[&key].object.metadata.generation,
        Some(2)
    );

    // Deleted: its objects go.
    std::fs::remove_file(dir.path().join("gw.yaml")).expect("remove");
    assert!(source.load_at(ts(5_000)).resources.gateways.is_empty());
}

#[test]
fn a_file_that_was_never_good_contributes_its_valid_documents() {
    let dir = TempDir::new("never-good");
    dir.write("gw.yaml", &format!("{GATEWAY_V1}---\nkey: [unclosed\n"));
    let mut source = FileSource::new(vec![dir.path().to_path_buf()]);
    let loaded = source.load_at(ts(1_000));
    assert_eq!(loaded.resources.gateways.len(), 1);
    assert!(
        loaded
            .diagnostics
            .iter()
            .any(|d| d.message.contains("unparseable YAML"))
    );
}

/// A route document named `name` sending `path` to `app`.
fn route_doc(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    \
         backendRefs: [{{name: app, port: 80}}]\n"
    )
}

fn route_path(loaded: &gateway_k8s::source::Loaded, name: &str) -> String {
    let route = &loaded.resources.http_routes[&ObjectKey::new("default", name)];
    let rules = route.object.spec.rules.as_ref().expect("rules");
    let matches = rules[0].matches.as_ref().expect("matches");
    let path = matches[0].path.as_ref().expect("path");
    path.value.clone().expect("path value")
}

#[test]
fn only_changed_documents_are_parsed_again() {
    let dir = TempDir::new("doc-cache");
    let docs = |second: &str| {
        [
            GATEWAY_V1.to_string(),
            route_doc("one", "/one"),
            route_doc("two", second),
        ]
        .join("---\n")
    };
    let file = dir.write("all.yaml", &docs("/two"));
    let mut source = FileSource::new(vec![file.clone()]);
    let one = ObjectKey::new("default", "one");
    let two = ObjectKey::new("default", "two");

    let first = source.load_at(ts(1_000));
    assert!(first.diagnostics.is_empty(), "{:?}", first.diagnostics);
    assert_eq!(source.parsed_documents(), 3);

    // Unchanged: nothing parsed, the very same objects.
    let second = source.load_at(ts(2_000));
    assert_eq!(source.parsed_documents(), 0);
    assert!(Arc::ptr_eq(
        &first.resources.http_routes[&one],
        &second.resources.http_routes[&one]
    ));
    assert_eq!(second.resources.len(), 3);

    // One document changed: only it is parsed; its generation moves, the others' do not.
    std::fs::write(&file, docs("/two-b")).expect("write");
    let third = source.load_at(ts(3_000));
    assert_eq!(source.parsed_documents(), 1);
    assert_eq!(route_path(&third, "two"), "/two-b");
    assert!(Arc::ptr_eq(
        &first.resources.http_routes[&one],
        &third.resources.http_routes[&one]
    ));
    let meta = |l: &gateway_k8s::source::Loaded, k: &ObjectKey| {
        let m = &l.resources.http_routes[k].object.metadata;
        (m.generation, m.creation_timestamp.clone().map(|t| t.0))
    };
    assert_eq!(meta(&third, &one), (Some(1), Some(ts(1_000))));
    assert_eq!(meta(&third, &two), (Some(2), Some(ts(1_000))));

    // A removed document is gone; the documents after it keep their objects, at their new
    // position.
    let without_one = [GATEWAY_V1.to_string(), route_doc("two", "/two-b")].join("---\n");
    std::fs::write(&file, without_one).expect("write");
    let fourth = source.load_at(ts(4_000));
    assert_eq!(source.parsed_documents(), 0);
    assert!(!fourth.resources.http_routes.contains_key(&one));
    assert_eq!(fourth.resources.http_routes[&two].document, 1);
    assert_eq!(meta(&fourth, &two), (Some(2), Some(ts(1_000))));

    // Back again: a new object (generation 1, new creation time), so it is read afresh.
    std::fs::write(&file, docs("/two-b")).expect("write");
    let fifth = source.load_at(ts(5_000));
    assert_eq!(source.parsed_documents(), 1);
    assert_eq!(meta(&fifth, &one), (Some(1), Some(ts(5_000))));
    assert_eq!(fifth.resources.http_routes[&two].document, 2);
}

#[test]
fn cached_documents_report_their_problems_as_when_parsed() {
    let dir = TempDir::new("doc-cache-errors");
    let bad = [
        route_doc("one", "/one"),
        "kind: [unclosed\n".to_string(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: 3}\n".to_string(),
    ]
    .join("---\n");
    let file = dir.write("bad.yaml", &bad);
    let mut source = FileSource::new(vec![file.clone()]);
    let messages = |l: &gateway_k8s::source::Loaded| {
        l.diagnostics
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
    };
    let first = source.load_at(ts(1_000));
    let reported = messages(&first);
    let documents: Vec<_> = first.diagnostics.iter().map(|d| d.document).collect();
    assert_eq!(documents, vec![Some(1), Some(2)], "{reported:?}");
    assert!(reported[0].contains("unparseable YAML"), "{reported:?}");
    assert!(reported[1].contains("invalid Service"), "{reported:?}");
    // Never good: its valid document is served.
    assert_eq!(first.resources.len(), 1);

    // Read again from the cache: the same report.
    let second = source.load_at(ts(2_000));
    assert_eq!(source.parsed_documents(), 0);
    assert_eq!(messages(&second), reported);

    // Fixed: only the fixed documents are parsed.
    let good = [
        route_doc("one", "/one"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n".to_string(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n"
            .to_string(),
    ]
    .join("---\n");
    std::fs::write(&file, good).expect("write");
    let third = source.load_at(ts(3_000));
    assert_eq!(source.parsed_documents(), 2);
    assert!(third.diagnostics.is_empty(), "{:?}", messages(&third));
    assert_eq!(third.resources.len(), 3);
}

#[test]
fn many_documents_are_read_in_order() {
    let dir = TempDir::new("doc-cache-many");
    let count = 300;
    let text = (0..count)
        .map(|i| route_doc(&format!("r{i}"), &format!("/r{i}")))
        .collect::<Vec<_>>()
        .join("---\n");
    let file = dir.write("many.yaml", &text);
    let mut source = FileSource::new(vec![file]);
    let loaded = source.load_at(ts(1_000));
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    assert_eq!(source.parsed_documents(), count);
    let names: Vec<_> = loaded
        .resources
        .order()
        .iter()
        .map(|(_, key)| key.name.clone())
        .collect();
    let expected: Vec<_> = (0..count).map(|i| format!("r{i}")).collect();
    assert_eq!(names, expected);
    for (i, name) in expected.iter().enumerate() {
        let route = &loaded.resources.http_routes[&ObjectKey::new("default", name.clone())];
        assert_eq!(route.document, i);
        assert_eq!(route_path(&loaded, name), format!("/r{i}"));
    }
}
