//! Settings read from Kubernetes Secrets: htpasswd users, API keys, JWKS.
//!
//! A field of type [`SecretSource`] names a Secret by `secretRef`. The configuration source
//! resolves the reference (gateway-k8s: the filter object's namespace by default, another one
//! with a ReferenceGrant) and hands the Secret's data to the factory with the reference
//! ([`gateway_core::config::ExtensionRef::secrets`]); the factory fills [`SecretSource::data`]
//! before the settings are read. A change of the Secret's data rebuilds the filter.

use std::collections::BTreeMap;

use gateway_core::config::SecretData;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SpecError;

/// A Secret to read settings from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSource {
    /// The Secret.
    pub secret_ref: SecretObjectRef,
    /// The key of the Secret's data to read. Default: as the field using it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The Secret's data (key -> text), filled from the resolved Secret when the filter is
    /// built; what YAML writes here is replaced. From Rust, set it directly.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

/// A Secret by name (`SecretObjectReference`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretObjectRef {
    /// The Secret's name.
    pub name: String,
    /// Its namespace. Default: the filter object's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl SecretSource {
    /// The text under [`SecretSource::key`], else `default_key`, else the Secret's only entry.
    /// `field` names the setting in errors.
    pub(crate) fn text(&self, field: &str, default_key: &str) -> Result<&str, SpecError> {
        let name = &self.secret_ref.name;
        if let Some(key) = &self.key {
            return self.data.get(key).map(String::as_str).ok_or_else(|| {
                SpecError::invalid(field, format!("Secret {name} has no key {key}"))
            });
        }
        if let Some(text) = self.data.get(default_key) {
            return Ok(text);
        }
        match self.data.values().collect::<Vec<_>>().as_slice() {
            [only] => Ok(only),
            _ => Err(SpecError::invalid(
                field,
                format!("Secret {name} has no key {default_key} (set `key`)"),
            )),
        }
    }

    /// The entries to read: the one under [`SecretSource::key`], else all.
    pub(crate) fn entries(&self, field: &str) -> Result<Vec<(&str, &str)>, SpecError> {
        match &self.key {
            Some(_) => Ok(vec![(
                self.key.as_deref().unwrap_or_default(),
                self.text(field, "")?,
            )]),
            None => Ok(self
                .data
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()),
        }
    }
}

/// Writes into every `{"secretRef": ..}` object of `settings` the `data` of its Secret from
/// `secrets` (by `namespace/name`, or the name alone when the reference has no namespace). A
/// reference with no resolved Secret keeps the `data` written in it, if any; else it is an
/// error.
pub(crate) fn fill(settings: &mut Value, secrets: &SecretData) -> Result<(), SpecError> {
    match settings {
        Value::Array(items) => items.iter_mut().try_for_each(|v| fill(v, secrets)),
        Value::Object(map) => {
            if let Some(Value::Object(reference)) = map.get("secretRef") {
                let name = reference.get("name").and_then(Value::as_str).unwrap_or("");
                let id = match reference.get("namespace").and_then(Value::as_str) {
                    Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
                    _ => name.to_string(),
                };
                match secrets.get(&id) {
                    Some(data) => {
                        let data = data
                            .iter()
                            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                            .collect();
                        map.insert("data".into(), Value::Object(data));
                    }
                    None if map
                        .get("data")
                        .is_some_and(|d| d.as_object().is_some_and(|d| !d.is_empty())) => {}
                    None => {
                        return Err(SpecError::invalid(
                            "secretRef",
                            format!("Secret {id} was not resolved"),
                        ));
                    }
                }
            }
            map.iter_mut()
                .filter(|(k, _)| *k != "secretRef")
                .try_for_each(|(_, v)| fill(v, secrets))
        }
        _ => Ok(()),
    }
}
