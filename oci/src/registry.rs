//! Talking to a registry: push a component, resolve a tag to its manifest
//! digest, pull a component by digest. Every digest is checked against the
//! bytes received; a registry is not trusted to say what it sent.

use crate::artifact::{self, component_layer, sha256_digest, ArtifactError, Descriptor};
use futures::TryStreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use reef_api::component_ref::ComponentRef;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{reference}: {source}")]
    Registry {
        reference: String,
        source: oci_client::errors::OciDistributionError,
    },
    #[error("{reference}: {source}")]
    Artifact {
        reference: String,
        source: ArtifactError,
    },
    #[error("{reference}: the registry sent bytes whose digest is {got}, not {expected}")]
    DigestMismatch {
        reference: String,
        expected: String,
        got: String,
    },
    #[error("{reference}: the component is larger than {limit} bytes")]
    TooLarge { reference: String, limit: u64 },
    #[error("{reference}: no such manifest in the registry (check the repository, tag or digest)")]
    NotFound { reference: String },
    #[error("{reference}: pushing needs a tag (oci://HOST/REPO:TAG)")]
    NoTag { reference: String },
    #[error(
        "{reference}: the registry refused access (log in with `docker login`, or pass --username)"
    )]
    Unauthorized { reference: String },
    #[error("credentials for {registry}: {message}")]
    Credentials { registry: String, message: String },
}

impl OciError {
    /// What a pinned reference's content is cannot change, so a component
    /// refused for it is refused for good; the rest may pass on a later try.
    pub fn is_permanent(&self) -> bool {
        matches!(self, OciError::Artifact { .. } | OciError::TooLarge { .. })
    }
}

pub type Result<T> = std::result::Result<T, OciError>;

/// Whose credentials are used.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// Those `docker login` stored for the registry (`$DOCKER_CONFIG/config.json`
    /// or `~/.docker/config.json`), else anonymous.
    #[default]
    DockerConfig,
    Basic {
        username: String,
        password: String,
    },
    Anonymous,
}

/// How registries are reached.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Registries (`host:port`) reached in plain HTTP besides those on loopback,
    /// which always are.
    pub insecure: Vec<String>,
    pub credentials: Credentials,
}

/// A component pulled from a registry.
pub struct Pulled {
    /// The reference pinned to the manifest's digest.
    pub reference: ComponentRef,
    /// The component's bytes, and their digest.
    pub bytes: Vec<u8>,
    pub digest: String,
}

/// A registry's "no such manifest" (or repository) and "not for you" are
/// the caller's to fix, and said so; not failures of the registry.
fn classify(reference: &str, source: oci_client::errors::OciDistributionError) -> OciError {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as Code};
    let refused = match &source {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => true,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, Code::Unauthorized | Code::Denied)),
        E::ServerError { code, .. } => matches!(*code, 401 | 403),
        _ => false,
    };
    if refused {
        return OciError::Unauthorized {
            reference: reference.to_string(),
        };
    }
    let missing = match &source {
        E::ImageManifestNotFoundError(_) => true,
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, Code::ManifestUnknown | Code::NameUnknown)),
        E::ServerError { code, .. } => *code == 404,
        _ => false,
    };
    if missing {
        OciError::NotFound {
            reference: reference.to_string(),
        }
    } else {
        OciError::Registry {
            reference: reference.to_string(),
            source,
        }
    }
}

fn client_reference(reference: &ComponentRef) -> oci_client::Reference {
    let (registry, repository) = (reference.registry.clone(), reference.repository.clone());
    match (&reference.digest, &reference.tag) {
        (Some(digest), _) => {
            oci_client::Reference::with_digest(registry, repository, digest.clone())
        }
        (None, tag) => oci_client::Reference::with_tag(
            registry,
            repository,
            tag.clone().unwrap_or_else(|| "latest".to_string()),
        ),
    }
}

/// Where `docker login` keeps credentials: `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`.
fn docker_config() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".docker"))
        })?;
    Some(dir.join("config.json"))
}

impl Access {
    fn client(&self, reference: &ComponentRef) -> Client {
        let mut plain = self.insecure.clone();
        if reference.is_loopback() {
            plain.push(reference.registry.clone());
        }
        Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain),
            use_monolithic_push: true,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            platform_resolver: None,
            ..ClientConfig::default()
        })
    }

    fn auth(&self, reference: &ComponentRef) -> Result<RegistryAuth> {
        use docker_credential::{CredentialRetrievalError as E, DockerCredential};
        match &self.credentials {
            Credentials::Anonymous => Ok(RegistryAuth::Anonymous),
            Credentials::Basic { username, password } => {
                Ok(RegistryAuth::Basic(username.clone(), password.clone()))
            }
            Credentials::DockerConfig => {
                let Some(path) = docker_config() else {
                    return Ok(RegistryAuth::Anonymous);
                };
                let failed = |message: String| OciError::Credentials {
                    registry: reference.registry.clone(),
                    message,
                };
                let file = match std::fs::File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(RegistryAuth::Anonymous)
                    }
                    Err(e) => return Err(failed(format!("{}: {e}", path.display()))),
                };
                let reader = std::io::BufReader::new(file);
                match docker_credential::get_credential_from_reader(reader, &reference.registry) {
                    Ok(DockerCredential::UsernamePassword(user, password)) => {
                        Ok(RegistryAuth::Basic(user, password))
                    }
                    Ok(DockerCredential::IdentityToken(token)) => Ok(RegistryAuth::Bearer(token)),
                    Err(E::NoCredentialConfigured) => Ok(RegistryAuth::Anonymous),
                    Err(e) => Err(failed(format!("{}: {e}", path.display()))),
                }
            }
        }
    }

    /// Pushes a component under the reference's tag; returns the reference
    /// pinned to the manifest's digest.
    pub async fn push(&self, reference: &ComponentRef, component: &[u8]) -> Result<ComponentRef> {
        let named = reference.to_string();
        if reference.tag.is_none() {
            return Err(OciError::NoTag { reference: named });
        }
        let packed = artifact::pack(component).map_err(|source| OciError::Artifact {
            reference: named.clone(),
            source,
        })?;
        let client = self.client(reference);
        let target = client_reference(reference);
        let registry_error = |source| classify(&named, source);
        client
            .store_auth_if_needed(&reference.registry, &self.auth(reference)?)
            .await;
        client
            .push_blob(&target, component, &packed.layer_digest)
            .await
            .map_err(registry_error)?;
        client
            .push_blob(&target, &packed.config, &sha256_digest(&packed.config))
            .await
            .map_err(registry_error)?;
        let digest = sha256_digest(&packed.manifest);
        client
            .push_manifest_raw(
                &target,
                packed.manifest,
                http::HeaderValue::from_static(artifact::MANIFEST_MEDIA_TYPE),
            )
            .await
            .map_err(registry_error)?;
        Ok(reference.pinned(&digest))
    }

    /// The reference pinned to the digest of the manifest it names, and that
    /// manifest's component layer, checked to be a wasm component artifact of
    /// at most `max_size` bytes.
    pub async fn resolve(
        &self,
        reference: &ComponentRef,
        max_size: u64,
    ) -> Result<(ComponentRef, Descriptor)> {
        let client = self.client(reference);
        self.resolve_with(&client, reference, max_size).await
    }

    async fn resolve_with(
        &self,
        client: &Client,
        reference: &ComponentRef,
        max_size: u64,
    ) -> Result<(ComponentRef, Descriptor)> {
        let named = reference.to_string();
        let (manifest, _) = client
            .pull_manifest_raw(
                &client_reference(reference),
                &self.auth(reference)?,
                &[artifact::MANIFEST_MEDIA_TYPE],
            )
            .await
            .map_err(|source| classify(&named, source))?;
        let digest = sha256_digest(&manifest);
        if let Some(expected) = &reference.digest {
            if *expected != digest {
                return Err(OciError::DigestMismatch {
                    reference: named,
                    expected: expected.clone(),
                    got: digest,
                });
            }
        }
        let layer = component_layer(&manifest, max_size).map_err(|source| OciError::Artifact {
            reference: named,
            source,
        })?;
        Ok((reference.pinned(&digest), layer))
    }

    /// Pulls the component a reference names, reading at most `max_size` bytes.
    pub async fn pull(&self, reference: &ComponentRef, max_size: u64) -> Result<Pulled> {
        let client = self.client(reference);
        let (pinned, layer) = self.resolve_with(&client, reference, max_size).await?;
        let named = pinned.to_string();
        let mut stream = client
            .pull_blob_stream(&client_reference(&pinned), layer.digest.as_str())
            .await
            .map_err(|source| classify(&named, source))?
            .stream;
        let mut bytes = Vec::with_capacity(layer.size.min(max_size) as usize);
        loop {
            let chunk = stream.try_next().await.map_err(|e| OciError::Registry {
                reference: named.clone(),
                source: oci_client::errors::OciDistributionError::IoError(e),
            })?;
            let Some(chunk) = chunk else { break };
            if bytes.len() as u64 + chunk.len() as u64 > max_size.min(layer.size) {
                return Err(OciError::TooLarge {
                    reference: named,
                    limit: max_size.min(layer.size),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let digest = sha256_digest(&bytes);
        if digest != layer.digest {
            return Err(OciError::DigestMismatch {
                reference: named,
                expected: layer.digest,
                got: digest,
            });
        }
        Ok(Pulled {
            reference: pinned,
            bytes,
            digest,
        })
    }
}
