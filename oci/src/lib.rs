//! Wasm components as OCI artifacts: `oci://` references, the artifact
//! layout, a registry client that pushes, resolves and pulls them, and the
//! image archive containerd imports.

pub mod artifact;
pub mod image;
pub mod registry;

pub use reef_api::component_ref::{self as reference, ComponentRef};
pub use registry::{Access, Credentials, OciError, Pulled};
