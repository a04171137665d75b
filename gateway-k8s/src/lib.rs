//! Kubernetes Gateway API resources in, `gateway-core` configuration and resource status out.
//!
//! The crate has two halves:
//!
//! * **Pure translation** (no I/O): [`Resources`] holds parsed objects (GatewayClass, Gateway,
//!   HTTPRoute, ReferenceGrant, Namespace, Service, Secret, EndpointSlice,
//!   XBackendTrafficPolicy, and every other object untyped, e.g. `ExtensionRef` filter objects);
//!   [`Translator::translate`] turns them into a [`gateway_core::config::Config`] plus a
//!   [`StatusReport`] with the `status` the Gateway API specification asks a controller to write
//!   on GatewayClasses, Gateways and HTTPRoutes.
//! * **The file source** ([`source`]): reads YAML files and directories, stamps the metadata a
//!   Kubernetes API server would (generation, creationTimestamp, namespace) and watches the files
//!   for changes. It is the only module that touches the file system.
//!
//! Problems with individual documents or references never fail a whole load: they become
//! [`Diagnostic`]s or status conditions, as in a cluster.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod crds;
mod diagnostic;
mod resources;
pub mod source;
mod status;
mod translate;
mod yaml;

pub use crds::{
    ClientTrafficPolicy, ClientTrafficPolicySpec, ClientTrafficPolicyStatus, DIRECT_RESPONSE_GROUP,
    DirectResponse, DirectResponseSpec, XBackend, XBackendSpec, XBackendStatus,
    XBackendTrafficPolicy,
};
pub use diagnostic::Diagnostic;
pub use resources::{
    DEFAULT_NAMESPACE, DocumentError, GenericKey, Kind, Object, ObjectKey, Resources,
};
pub use status::{RenderCache, SUPPORTED_FEATURES, StatusReport, StatusText};
pub use translate::{TranslateOptions, Translation, Translator};
