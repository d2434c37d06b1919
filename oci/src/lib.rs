//! Wasm components as OCI artifacts: `oci://` references, the artifact
//! layout, and a registry client that pushes, resolves and pulls them.

pub mod artifact;
pub mod reference;
pub mod registry;

pub use reference::ComponentRef;
pub use registry::{Access, Credentials, OciError, Pulled};
