//! Bearer tokens: random 256-bit secrets stored only as sha256 hashes in the store,
//! each with a role. `reef up` / `--init` mint the admin and join tokens at first
//! start and leave them in the data dir for the operator.

use crate::registry::{Registry, RegistryError};
use crate::store::{Check, Op, Txn};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// A node agent: reads the cluster, registers itself, reports pod status and events.
    Node,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TokenRecord {
    role: Role,
    created_at: String,
}

fn token_key(token: &str) -> String {
    format!(
        "/auth/tokens/{}",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
}

pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    hex::encode(bytes)
}

/// Resolves a bearer token to its role, if the store knows it.
pub fn role_of(registry: &Registry, token: &str) -> Result<Option<Role>, RegistryError> {
    let Some(kv) = registry.store().get(&token_key(token))? else {
        return Ok(None);
    };
    let record: TokenRecord = serde_json::from_slice(&kv.value)?;
    Ok(Some(record.role))
}

/// Stores a token's hash with its role (idempotent).
pub async fn register(registry: &Registry, token: &str, role: Role) -> Result<(), RegistryError> {
    let key = token_key(token);
    let record = TokenRecord {
        role,
        created_at: reef_api::now_rfc3339(),
    };
    registry
        .store()
        .txn(Txn {
            checks: vec![Check::Absent { key: key.clone() }],
            ops: vec![Op::Put {
                key,
                value: serde_json::to_vec(&record)?,
            }],
        })
        .await?;
    Ok(())
}

/// Reads `DIR/NAME`, or creates it with a fresh token (owner-only permissions).
pub fn token_file(dir: &Path, name: &str) -> std::io::Result<String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = new_token();
    reef_api::config::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// The admin and join tokens of a cluster's first member.
pub struct BootstrapTokens {
    pub admin: String,
    pub join: String,
}

/// Ensures `admin.token` and `join.token` exist in `dir` and are known to the store.
pub async fn bootstrap(registry: &Registry, dir: &Path) -> Result<BootstrapTokens, RegistryError> {
    let io = |e: std::io::Error| {
        RegistryError::Internal(format!("token file in {}: {e}", dir.display()))
    };
    let admin = token_file(dir, "admin.token").map_err(io)?;
    let join = token_file(dir, "join.token").map_err(io)?;
    register(registry, &admin, Role::Admin).await?;
    register(registry, &join, Role::Node).await?;
    Ok(BootstrapTokens { admin, join })
}
