//! Wasm components as OCI artifacts: `oci://` references, the artifact
//! layout, and a registry client that pushes, resolves and pulls them.

pub mod artifact;
pub mod registry;

pub use reef_api::component_ref::{self as reference, ComponentRef};
pub use registry::{Access, Credentials, OciError, Pulled};
