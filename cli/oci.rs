//! `reef push` and `reef pull`: components to and from an OCI registry;
//! `reef image pack`: a component as an image archive for containerd.

use crate::{CliResult, Failure};
use reef_api::RawObject;
use reef_oci::{Access, ComponentRef, Credentials, OciError};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest component pulled (the API's default blob limit).
pub const MAX_COMPONENT: u64 = 64 << 20;

#[derive(clap::Args)]
pub struct RegistryArgs {
    /// A registry (HOST:PORT) to reach over plain HTTP; loopback ones always are.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST:PORT",
        value_parser = crate::tuning::registry_name
    )]
    pub insecure: Vec<String>,
    /// Log in as this user, with the password read from standard input
    /// (by default: the credentials `docker login` stored, else none).
    #[arg(long)]
    pub username: Option<String>,
}

impl RegistryArgs {
    pub fn access(&self) -> Result<Access, Failure> {
        let credentials = match &self.username {
            None => Credentials::DockerConfig,
            Some(username) => {
                let mut password = String::new();
                std::io::stdin()
                    .take(4096)
                    .read_to_string(&mut password)
                    .map_err(|e| {
                        Failure::usage(format!("error: reading the password from stdin: {e}"))
                    })?;
                Credentials::Basic {
                    username: username.clone(),
                    password: password.trim_end_matches(['\r', '\n']).to_string(),
                }
            }
        };
        Ok(Access {
            insecure: self.insecure.clone(),
            credentials,
        })
    }
}

pub fn parse_reference(text: &str) -> Result<ComponentRef, Failure> {
    text.parse()
        .map_err(|e| Failure::usage(format!("error: {e}")))
}

/// A registry's refusal of what was sent is bad input (2); the rest is 1.
pub fn failure(e: OciError) -> Failure {
    let code = match &e {
        OciError::Artifact { .. }
        | OciError::NoTag { .. }
        | OciError::TooLarge { .. }
        | OciError::NotFound { .. } => 2,
        OciError::Registry { .. }
        | OciError::DigestMismatch { .. }
        | OciError::Unauthorized { .. }
        | OciError::Credentials { .. } => 1,
    };
    Failure {
        code,
        message: format!("error: {e}"),
    }
}

/// The objects with each `oci://` component that names a tag pinned to the
/// digest the tag names now: a spec never follows a tag that moves later.
pub async fn pin_components(objects: &[RawObject]) -> Result<Vec<RawObject>, Failure> {
    let access = Access::default();
    let mut pinned: HashMap<String, String> = HashMap::new();
    let mut out = objects.to_vec();
    for object in &mut out {
        for path in ["/template/component", "/component"] {
            let Some(Value::String(value)) = object.spec.pointer_mut(path) else {
                continue;
            };
            if !value.starts_with(reef_oci::reference::SCHEME) {
                continue;
            }
            if let Some(known) = pinned.get(value.as_str()) {
                *value = known.clone();
                continue;
            }
            let reference = parse_reference(value)?;
            let (resolved, _) = access
                .resolve(&reference, MAX_COMPONENT)
                .await
                .map_err(failure)?;
            let resolved = resolved.to_string();
            pinned.insert(value.clone(), resolved.clone());
            *value = resolved;
        }
    }
    Ok(out)
}

pub async fn push(file: &Path, reference: &str, registry: &RegistryArgs) -> CliResult {
    let reference = parse_reference(reference)?;
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::usage(format!("error: {}: {e}", file.display())))?;
    let pinned = registry
        .access()?
        .push(&reference, &bytes)
        .await
        .map_err(failure)?;
    println!("{pinned}");
    Ok(())
}

pub async fn pull(reference: &str, output: &PathBuf, registry: &RegistryArgs) -> CliResult {
    let reference = parse_reference(reference)?;
    let pulled = registry
        .access()?
        .pull(&reference, MAX_COMPONENT)
        .await
        .map_err(failure)?;
    std::fs::write(output, &pulled.bytes)
        .map_err(|e| Failure::other(format!("error: {}: {e}", output.display())))?;
    println!("{} {}", pulled.reference, pulled.digest);
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Write a component as an OCI image archive that `ctr image import` takes.
    Pack {
        /// The component (.wasm).
        file: PathBuf,
        /// Where to write the archive.
        #[arg(short, long)]
        output: PathBuf,
        /// The image's name in containerd [default: FILE's stem, tagged latest].
        #[arg(long)]
        name: Option<String>,
    },
}

pub fn image(command: ImageCommand) -> CliResult {
    let ImageCommand::Pack { file, output, name } = command;
    let bytes = std::fs::read(&file)
        .map_err(|e| Failure::usage(format!("error: {}: {e}", file.display())))?;
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Failure::usage(format!("error: {}: not a file name", file.display())))?;
    let stem = file_name.strip_suffix(".wasm").unwrap_or(file_name);
    let name = name.unwrap_or_else(|| format!("{stem}:latest"));
    let archive = reef_oci::image::pack_image(&bytes, file_name, &name)
        .map_err(|e| Failure::usage(format!("error: {}: {e}", file.display())))?;
    std::fs::write(&output, &archive)
        .map_err(|e| Failure::other(format!("error: {}: {e}", output.display())))?;
    println!("{name}");
    Ok(())
}
