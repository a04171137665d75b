//! Secrets named in filter settings: every JSON object of the form
//! `{"secretRef": {"name": ..., "namespace": ...}}`, at any depth of a filter object's settings
//! (an `ExtensionRef` target or an attached policy), names a Secret. `namespace` defaults to the
//! filter object's; another namespace needs a ReferenceGrant there from the filter object's
//! group and kind to `Secret`. The translator writes the namespace into the reference and hands
//! the Secret's data to the filter with the reference
//! ([`gateway_core::config::ExtensionRef::secrets`]), never in the serialized settings.

use std::collections::BTreeMap;

use gateway_core::config::SecretData;
use serde_json::Value;

use super::listener::Problem;
use super::refs::{self, RefFrom};
use crate::resources::{ObjectKey, Resources};

/// Resolves every `secretRef` in `settings` (writing its namespace in) for an object
/// `from`; the Secrets' data by `namespace/name`, or the first reference that does not resolve:
/// `RefNotPermitted` (another namespace without a ReferenceGrant) or `InvalidExtensionRef` (no
/// such Secret, or an unreadable reference).
pub(crate) fn resolve(
    resources: &Resources,
    from: RefFrom<'_>,
    settings: &mut Value,
) -> Result<SecretData, Problem> {
    let mut found = BTreeMap::new();
    walk(resources, from, settings, &mut found)?;
    Ok(SecretData::new(found))
}

fn walk(
    resources: &Resources,
    from: RefFrom<'_>,
    value: &mut Value,
    found: &mut BTreeMap<String, BTreeMap<String, String>>,
) -> Result<(), Problem> {
    match value {
        Value::Array(items) => {
            for item in items {
                walk(resources, from, item, found)?;
            }
        }
        Value::Object(map) => {
            if let Some(Value::Object(reference)) = map.get_mut("secretRef") {
                let name = reference
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| ("InvalidExtensionRef", "secretRef has no name".to_string()))?
                    .to_string();
                let namespace = match reference.get("namespace").and_then(Value::as_str) {
                    Some(n) if !n.is_empty() => n.to_string(),
                    _ => from.namespace.to_string(),
                };
                reference.insert("namespace".into(), Value::String(namespace.clone()));
                let key = ObjectKey::new(namespace.clone(), name.clone());
                if !refs::permitted(resources, from, "", "Secret", &namespace, &name) {
                    return Err((
                        "RefNotPermitted",
                        format!(
                            "Secret {key} is in another namespace and no ReferenceGrant there allows {}/{} from {} to refer to it",
                            from.group, from.kind, from.namespace
                        ),
                    ));
                }
                let secret = resources.secrets.get(&key).ok_or_else(|| {
                    (
                        "InvalidExtensionRef",
                        format!("Secret {key} does not exist"),
                    )
                })?;
                let secret = &secret.object;
                let mut data: BTreeMap<String, String> = secret
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                for (k, v) in secret.string_data.iter().flatten() {
                    data.insert(k.clone(), v.clone());
                }
                found.insert(key.to_string(), data);
            }
            for (field, inner) in map.iter_mut() {
                if field != "secretRef" {
                    walk(resources, from, inner, found)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}
