//! The Wasm OCI artifact layout the ecosystem shares (CNCF TAG Runtime): an
//! OCI image manifest with one `application/wasm` layer, the component's
//! bytes, and a `application/vnd.wasm.config.v0+json` config that says what
//! the component imports and exports.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("not a wasm component artifact: {0}")]
    Layout(String),
}

/// What a component imports and exports, by name (`wasi:http/incoming-handler@0.2.0`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interfaces {
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// The WIT world the component targets, when known.
    pub target: Option<String>,
}

/// The config blob of a wasm artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    pub created: String,
    pub architecture: String,
    pub os: String,
    pub layer_digests: Vec<String>,
    pub component: Interfaces,
}

/// Reads the top-level imports and exports of a component, and refuses
/// anything that is not one (a core module, or not wasm at all).
pub fn interfaces(bytes: &[u8]) -> Result<Interfaces, ArtifactError> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut found = Interfaces::default();
    // Nested modules and components have their own imports; only the outer ones count.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| ArtifactError::NotAComponent(e.to_string()))?;
        match payload {
            Payload::Version { encoding, .. } if depth == 0 && encoding != Encoding::Component => {
                return Err(ArtifactError::NotAComponent(
                    "a core module (build for wasm32-wasip2, or adapt it with wasm-tools component new)"
                        .to_string(),
                ));
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import.map_err(|e| ArtifactError::NotAComponent(e.to_string()))?;
                    found.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(|e| ArtifactError::NotAComponent(e.to_string()))?;
                    found.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(found)
}

/// The config and manifest of a component, as bytes to upload (their digests
/// are of exactly these bytes).
pub struct Packed {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub layer_digest: String,
}

pub fn pack(component: &[u8]) -> Result<Packed, ArtifactError> {
    let layer_digest = sha256_digest(component);
    let config = WasmConfig {
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        architecture: "wasm".to_string(),
        os: "wasip2".to_string(),
        layer_digests: vec![layer_digest.clone()],
        component: interfaces(component)?,
    };
    let config = serde_json::to_vec(&config).map_err(|e| ArtifactError::Layout(e.to_string()))?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
        config: Descriptor {
            media_type: WASM_CONFIG_MEDIA_TYPE.to_string(),
            digest: sha256_digest(&config),
            size: config.len() as u64,
        },
        layers: vec![Descriptor {
            media_type: WASM_LAYER_MEDIA_TYPE.to_string(),
            digest: layer_digest.clone(),
            size: component.len() as u64,
        }],
    };
    let manifest =
        serde_json::to_vec(&manifest).map_err(|e| ArtifactError::Layout(e.to_string()))?;
    Ok(Packed {
        config,
        manifest,
        layer_digest,
    })
}

/// The parts of an OCI image manifest reef reads.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// The component layer of a manifest, if the manifest is a wasm component
/// artifact whose component is at most `max_size` bytes.
pub fn component_layer(manifest: &[u8], max_size: u64) -> Result<Descriptor, ArtifactError> {
    let manifest: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| ArtifactError::Layout(format!("the manifest does not parse: {e}")))?;
    if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
        return Err(ArtifactError::Layout(format!(
            "its config is {:?}, not {WASM_CONFIG_MEDIA_TYPE} (push it with `reef push`)",
            manifest.config.media_type
        )));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(ArtifactError::Layout(format!(
            "{} layers; a component artifact has exactly one",
            manifest.layers.len()
        )));
    };
    if layer.media_type != WASM_LAYER_MEDIA_TYPE {
        return Err(ArtifactError::Layout(format!(
            "its layer is {:?}, not {WASM_LAYER_MEDIA_TYPE}",
            layer.media_type
        )));
    }
    if !reef_api::component_ref::valid_digest(&layer.digest) {
        return Err(ArtifactError::Layout(format!(
            "its layer digest {:?} is not sha256",
            layer.digest
        )));
    }
    if layer.size > max_size {
        return Err(ArtifactError::Layout(format!(
            "its component is {} bytes; at most {max_size} are allowed",
            layer.size
        )));
    }
    Ok(layer.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the preamble alone (version 0x0d, layer 1).
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn a_packed_component_reads_back_as_its_layer() {
        let packed = pack(EMPTY_COMPONENT).expect("packs");
        let layer = component_layer(&packed.manifest, 1024).expect("a component artifact");
        assert_eq!(layer.digest, sha256_digest(EMPTY_COMPONENT));
        assert_eq!(layer.size, EMPTY_COMPONENT.len() as u64);
        let config: WasmConfig = serde_json::from_slice(&packed.config).expect("config");
        assert_eq!(config.layer_digests, std::slice::from_ref(&layer.digest));
        assert_eq!(
            (config.os.as_str(), config.architecture.as_str()),
            ("wasip2", "wasm")
        );
        let manifest: serde_json::Value = serde_json::from_slice(&packed.manifest).expect("json");
        assert_eq!(manifest["config"]["digest"], sha256_digest(&packed.config));
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
    }

    #[test]
    fn modules_and_other_bytes_are_not_components() {
        for bytes in [EMPTY_MODULE, b"hello".as_slice(), b"".as_slice()] {
            assert!(matches!(pack(bytes), Err(ArtifactError::NotAComponent(_))));
        }
    }

    #[test]
    fn a_manifest_that_is_not_one_component_is_refused() {
        let packed = pack(EMPTY_COMPONENT).expect("packs");
        assert!(
            component_layer(&packed.manifest, 1).is_err(),
            "over the size cap"
        );
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&packed.manifest).expect("json");
        manifest["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
        let image = serde_json::to_vec(&manifest).expect("json");
        assert!(component_layer(&image, 1024)
            .unwrap_err()
            .to_string()
            .contains("config"));
        let mut two: serde_json::Value = serde_json::from_slice(&packed.manifest).expect("json");
        let layer = two["layers"][0].clone();
        two["layers"] = serde_json::json!([layer.clone(), layer]);
        let two = serde_json::to_vec(&two).expect("json");
        assert!(component_layer(&two, 1024)
            .unwrap_err()
            .to_string()
            .contains("2 layers"));
        assert!(component_layer(b"{", 1024).is_err());
    }
}
