//! A component as an OCI image archive that `ctr image import` takes, for
//! containerd to run through reef's shim. Unlike the registry artifact, the
//! config is an ordinary image config and the component sits in an ordinary
//! tar layer: containerd 1.6 before 1.6.25 refuses wasm media types, and
//! `ctr run` refuses any other config type.

use crate::artifact::{sha256_digest, MANIFEST_MEDIA_TYPE};
use serde_json::json;

pub const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const TAR_LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The annotation containerd names an imported image by.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Appends one regular file; fixed owner, mode and time, so the same
/// component always packs to the same bytes (and digests).
fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    append_mode(tar, path, bytes, 0o644)
}

fn append_mode(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, bytes)
}

fn blob(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// The image archive: `file_name` (e.g. `hello.wasm`) at the root of its one
/// layer and as its entrypoint, named `image_name` for containerd.
pub fn pack_image(component: &[u8], file_name: &str, image_name: &str) -> std::io::Result<Vec<u8>> {
    crate::artifact::interfaces(component).map_err(std::io::Error::other)?;
    pack_one_file(component, file_name, image_name, ("wasip2", "wasm"), 0o644)
}

/// A static Linux executable as an image the same way, for `runc` to run
/// beside the shim in benchmarks.
pub fn pack_native_image(
    binary: &[u8],
    file_name: &str,
    image_name: &str,
) -> std::io::Result<Vec<u8>> {
    pack_one_file(binary, file_name, image_name, ("linux", "amd64"), 0o755)
}

fn pack_one_file(
    bytes: &[u8],
    file_name: &str,
    image_name: &str,
    (os, architecture): (&str, &str),
    mode: u32,
) -> std::io::Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    append_mode(&mut layer, file_name, bytes, mode)?;
    let layer = layer.into_inner()?;
    let layer_digest = sha256_digest(&layer);
    // The platform is in the config only: an index entry with a wasm platform
    // is filtered out by `ctr image import` on a linux host.
    let config = serde_json::to_vec(&json!({
        "architecture": architecture,
        "os": os,
        "config": {"Entrypoint": [format!("/{file_name}")]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": IMAGE_CONFIG_MEDIA_TYPE,
            "digest": sha256_digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": TAR_LAYER_MEDIA_TYPE,
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": sha256_digest(&manifest),
            "size": manifest.len(),
            "annotations": {CONTAINERD_NAME: image_name},
        }],
    }))?;
    let mut archive = tar::Builder::new(Vec::new());
    append(
        &mut archive,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    append(&mut archive, "index.json", &index)?;
    for bytes in [&layer, &config, &manifest] {
        append(&mut archive, &blob(&sha256_digest(bytes)), bytes)?;
    }
    archive.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Read;

    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    fn entries(archive: &[u8]) -> HashMap<String, Vec<u8>> {
        let mut out = HashMap::new();
        let mut tar = tar::Archive::new(archive);
        for entry in tar.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).expect("read");
            out.insert(path, bytes);
        }
        out
    }

    #[test]
    fn the_archive_is_an_oci_layout_whose_digests_hold() {
        let archive = pack_image(EMPTY_COMPONENT, "hello.wasm", "reef/hello:v1").expect("packs");
        assert_eq!(
            archive,
            pack_image(EMPTY_COMPONENT, "hello.wasm", "reef/hello:v1").expect("packs")
        );
        let files = entries(&archive);
        for (path, bytes) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256_digest(bytes), format!("sha256:{hex}"), "{path}");
            }
        }
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).expect("index");
        assert_eq!(
            index["manifests"][0]["annotations"][CONTAINERD_NAME],
            "reef/hello:v1"
        );
        assert!(index["manifests"][0].get("platform").is_none());
        let manifest_digest = index["manifests"][0]["digest"].as_str().expect("digest");
        let manifest: serde_json::Value =
            serde_json::from_slice(&files[&blob(manifest_digest)]).expect("manifest");
        let layer_digest = manifest["layers"][0]["digest"].as_str().expect("layer");
        let config: serde_json::Value = serde_json::from_slice(
            &files[&blob(manifest["config"]["digest"].as_str().expect("config"))],
        )
        .expect("config");
        assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest);
        let layer = entries(&files[&blob(layer_digest)]);
        assert_eq!(layer["hello.wasm"], EMPTY_COMPONENT);
    }

    #[test]
    fn only_components_are_packed() {
        assert!(pack_image(b"hello", "x.wasm", "x:1").is_err());
    }
}
