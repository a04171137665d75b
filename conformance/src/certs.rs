//! The TLS material the upstream suite generates at start-up (CATALOG.md §2.1), made with rcgen.
//!
//! Upstream self-signs some certificates; here every serving certificate is signed by one suite
//! CA, which the HTTPS client trusts. The Secrets are emitted as `kubernetes.io/tls` documents.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The conformance infrastructure namespace.
pub const INFRA_NS: &str = "gateway-conformance-infra";
/// The web backend namespace.
pub const WEB_NS: &str = "gateway-conformance-web-backend";
/// The app backend namespace.
pub const APP_NS: &str = "gateway-conformance-app-backend";

/// One generated `kubernetes.io/tls` Secret.
#[derive(Clone, Debug)]
pub struct GeneratedSecret {
    /// Secret name.
    pub name: String,
    /// Secret namespace.
    pub namespace: String,
    /// The DNS names / URIs the certificate carries (those rcgen accepted).
    pub sans: Vec<String>,
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM PKCS#8 private key.
    pub key_pem: String,
}

impl GeneratedSecret {
    /// The Secret as a Kubernetes document.
    pub fn to_document(&self) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": B64.encode(self.cert_pem.as_bytes()),
                "tls.key": B64.encode(self.key_pem.as_bytes()),
            },
        })
    }
}

/// The suite CA and every Secret signed by it. Generated once per run.
#[derive(Debug)]
pub struct SuiteCerts {
    ca_pem: String,
    mismatch_ca_pem: String,
    secrets: Vec<GeneratedSecret>,
    /// The frontend client-certificate CAs: (ConfigMap name, PEM).
    client_cas: Vec<(&'static str, String)>,
}

/// The frontend mTLS material upstream generates: `(CA ConfigMap, client certificate Secret)`.
/// Each client certificate is signed by the CA of its pair, and by no other.
pub const CLIENT_CERT_PAIRS: &[(&str, &str)] = &[
    (
        "tls-validity-checks-ca-certificate",
        "tls-validity-checks-client-certificate",
    ),
    (
        "tls-validity-checks-per-port-ca-certificate",
        "tls-validity-checks-per-port-client-certificate",
    ),
];

/// The client certificate the Gateway presents to TLS backends
/// (`spec.tls.backend.clientCertificateRef` of GatewayTLSBackendClientCertificate). It is signed
/// by the suite CA, which is also what `tls-checks-ca-certificate` holds: the backend that
/// validates client certificates trusts that ConfigMap.
pub const BACKEND_CLIENT_CERT: &str = "tls-checks-client-certificate";

/// A client certificate (`clientAuth` key usage) for `secret`, signed by `issuer`.
fn client_cert(secret: &str, issuer: &Issuer<'_, KeyPair>) -> Result<GeneratedSecret> {
    let key = KeyPair::generate().map_err(|e| cert_err(secret, e))?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, secret);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params
        .signed_by(&key, issuer)
        .map_err(|e| cert_err(secret, e))?;
    Ok(GeneratedSecret {
        name: secret.to_string(),
        namespace: INFRA_NS.to_string(),
        sans: Vec::new(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A client certificate for `secret`, signed by a fresh CA: (CA PEM, client Secret).
fn client_pair(ca_name: &str, secret: &str) -> Result<(String, GeneratedSecret)> {
    let ca_key = KeyPair::generate().map_err(|e| cert_err(ca_name, e))?;
    let ca = ca_params(ca_name);
    let ca_pem = ca
        .self_signed(&ca_key)
        .map_err(|e| cert_err(ca_name, e))?
        .pem();
    let issuer = Issuer::new(ca, ca_key);
    Ok((ca_pem, client_cert(secret, &issuer)?))
}

/// `(name, namespaces, SANs)` of every serving certificate the suite generates.
const SECRETS: &[(&str, &[&str], &[&str])] = &[
    (
        "tls-validity-checks-certificate",
        &[INFRA_NS],
        &["*", "*.org", "*.wildcard.org"],
    ),
    ("certificate", &[WEB_NS], &["*"]),
    (
        "tls-checks-certificate",
        &[INFRA_NS],
        &[
            "abc.example.com",
            "spiffe://abc.example.com/test-identity",
            "other.example.com",
        ],
    ),
    (
        "tls-passthrough-checks-certificate",
        &[INFRA_NS, APP_NS],
        &["abc.example.com"],
    ),
    (
        "tls-terminate-checks-certificate",
        &[INFRA_NS],
        &["tls.example.com"],
    ),
];

fn cert_err(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Cert {
        name: name.to_string(),
        message: e.to_string(),
    }
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Turns one SAN string into an rcgen SAN: `scheme://` strings become URIs, the rest DNS names.
/// Returns `None` when rcgen refuses the value (it is then left out of the certificate).
fn san(value: &str) -> Option<SanType> {
    let ia5 = rcgen::string::Ia5String::try_from(value).ok()?;
    if value.contains("://") {
        Some(SanType::URI(ia5))
    } else {
        Some(SanType::DnsName(ia5))
    }
}

impl SuiteCerts {
    /// Generates the CA, a second unrelated CA (`mismatch-ca-certificate`) and all Secrets.
    pub fn generate() -> Result<Self> {
        let ca_key = KeyPair::generate().map_err(|e| cert_err("ca", e))?;
        let ca = ca_params("gateway-conformance-ca");
        let ca_pem = ca
            .self_signed(&ca_key)
            .map_err(|e| cert_err("ca", e))?
            .pem();
        let issuer = Issuer::new(ca, ca_key);

        let mismatch_key = KeyPair::generate().map_err(|e| cert_err("mismatch-ca", e))?;
        let mismatch_ca_pem = ca_params("gateway-conformance-mismatch-ca")
            .self_signed(&mismatch_key)
            .map_err(|e| cert_err("mismatch-ca", e))?
            .pem();

        let mut secrets = Vec::new();
        for (name, namespaces, sans) in SECRETS {
            let key = KeyPair::generate().map_err(|e| cert_err(name, e))?;
            let mut params = CertificateParams::default();
            let mut accepted = Vec::new();
            for value in *sans {
                match san(value) {
                    Some(s) => {
                        params.subject_alt_names.push(s);
                        accepted.push(value.to_string());
                    }
                    None => tracing::warn!(secret = name, san = value, "SAN refused by rcgen"),
                }
            }
            let cn = sans.first().copied().unwrap_or(name);
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(|e| cert_err(name, e))?;
            for ns in *namespaces {
                secrets.push(GeneratedSecret {
                    name: name.to_string(),
                    namespace: ns.to_string(),
                    sans: accepted.clone(),
                    cert_pem: cert.pem(),
                    key_pem: key.serialize_pem(),
                });
            }
        }
        secrets.push(client_cert(BACKEND_CLIENT_CERT, &issuer)?);
        let mut client_cas = Vec::new();
        for (ca_name, secret) in CLIENT_CERT_PAIRS {
            let (pem, client) = client_pair(ca_name, secret)?;
            client_cas.push((*ca_name, pem));
            secrets.push(client);
        }
        Ok(SuiteCerts {
            ca_pem,
            mismatch_ca_pem,
            secrets,
            client_cas,
        })
    }

    /// The suite CA certificate (PEM) the client trusts.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Every generated Secret.
    pub fn secrets(&self) -> &[GeneratedSecret] {
        &self.secrets
    }

    /// The generated Secret `name` (infra namespace first), if any.
    pub fn secret(&self, name: &str) -> Option<&GeneratedSecret> {
        self.secrets.iter().find(|s| s.name == name)
    }

    /// The Secrets plus the CA ConfigMaps (`tls-checks-ca-certificate`,
    /// `mismatch-ca-certificate` and the client-certificate CAs of [`CLIENT_CERT_PAIRS`]), ready
    /// to write into a config directory.
    pub fn documents(&self) -> Vec<Value> {
        let mut docs: Vec<Value> = self.secrets.iter().map(|s| s.to_document()).collect();
        let fixed = [
            ("tls-checks-ca-certificate", &self.ca_pem),
            ("mismatch-ca-certificate", &self.mismatch_ca_pem),
        ];
        let clients = self.client_cas.iter().map(|(n, pem)| (*n, pem));
        for (name, pem) in fixed.into_iter().chain(clients) {
            docs.push(json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": INFRA_NS},
                "data": {"ca.crt": pem},
            }));
        }
        docs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn generates_all_secrets_signed_by_the_ca() {
        let certs = SuiteCerts::generate().expect("generate");
        let names: Vec<_> = certs
            .secrets()
            .iter()
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect();
        for want in [
            "gateway-conformance-infra/tls-validity-checks-certificate",
            "gateway-conformance-web-backend/certificate",
            "gateway-conformance-infra/tls-checks-certificate",
            "gateway-conformance-infra/tls-passthrough-checks-certificate",
            "gateway-conformance-app-backend/tls-passthrough-checks-certificate",
            "gateway-conformance-infra/tls-terminate-checks-certificate",
        ] {
            assert!(names.iter().any(|n| n == want), "missing {want}: {names:?}");
        }
        let validity = &certs.secrets()[0];
        assert!(validity.sans.iter().any(|s| s == "*.wildcard.org"));
        assert!(validity.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(validity.key_pem.contains("PRIVATE KEY"));
        let doc = validity.to_document();
        assert_eq!(doc["type"], "kubernetes.io/tls");
        let crt = B64
            .decode(doc["data"]["tls.crt"].as_str().expect("tls.crt"))
            .expect("base64");
        assert_eq!(crt, validity.cert_pem.as_bytes());

        // The leaf verifies against the CA for a name its wildcard covers.
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut certs.ca_pem().as_bytes()) {
            roots.add(c.expect("ca pem")).expect("add root");
        }
        let leaf = rustls_pemfile::certs(&mut validity.cert_pem.as_bytes())
            .next()
            .expect("leaf")
            .expect("leaf pem");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let name = rustls::pki_types::ServerName::try_from("third.wildcard.org").expect("name");
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .expect("leaf verifies");
        assert_eq!(
            certs.documents().len(),
            certs.secrets().len() + 2 + CLIENT_CERT_PAIRS.len()
        );

        // Each client certificate verifies against its own CA only.
        let docs = certs.documents();
        let ca_of = |name: &str| -> String {
            docs.iter()
                .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == name)
                .and_then(|d| d["data"]["ca.crt"].as_str())
                .expect("CA ConfigMap")
                .to_string()
        };
        let verifier = |ca: &str| {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
                roots.add(c.expect("pem")).expect("root");
            }
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                std::sync::Arc::new(roots),
                std::sync::Arc::new(rustls::crypto::ring::default_provider()),
            )
            .build()
            .expect("client verifier")
        };
        for (i, (ca, _)) in CLIENT_CERT_PAIRS.iter().enumerate() {
            let v = verifier(&ca_of(ca));
            for (j, (_, secret)) in CLIENT_CERT_PAIRS.iter().enumerate() {
                let s = certs.secret(secret).expect("client secret");
                let leaf = rustls_pemfile::certs(&mut s.cert_pem.as_bytes())
                    .next()
                    .expect("leaf")
                    .expect("pem");
                let ok = v
                    .verify_client_cert(&leaf, &[], rustls::pki_types::UnixTime::now())
                    .is_ok();
                assert_eq!(ok, i == j, "{secret} against {ca}");
            }
        }
    }
}
