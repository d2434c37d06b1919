//! Credentials and cluster secrets: the one module that reads and writes the
//! `/auth/` and `/cluster/` keys (the registry owns `/registry/` and `/claims/`).
//!
//! Bearer tokens are random 256-bit secrets, stored only as sha256 hashes, each
//! bound to one [`Identity`]. `--init` mints the admin, join (nodes) and member
//! (control-plane members) tokens and leaves them in the data dir; a node
//! exchanges the join token once for a credential bound to its name; tenants'
//! tokens are minted through the API and shown once.

use crate::registry::{RegistryError, Result};
use crate::store::{Check, Op, Store, Txn};
use rand::Rng;
pub use reef_api::identity::{Identity, TenantRole, TokenInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOKENS: &str = "/auth/tokens/";
/// `/auth/nodes/NAME` holds the id of the one credential of node NAME.
const NODE_CREDENTIALS: &str = "/auth/nodes/";
/// Members fetch it with the member token; the Raft routes accept only it.
const RAFT_SECRET_KEY: &str = "/cluster/raft-secret";
/// The key nodes and members sign node-to-node requests with.
const NODE_ACCESS_KEY: &str = "/cluster/node-access";
/// The cluster CA's certificate and key (JSON of [`crate::tls::ClusterCa`]).
const CA_KEY: &str = "/cluster/ca";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TokenRecord {
    id: String,
    identity: Identity,
    created_at: String,
    /// Unix seconds; none: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

/// Records written before identities existed: `{"role": "admin"|"node"}`.
#[derive(Deserialize)]
struct LegacyRecord {
    role: String,
    #[serde(default)]
    created_at: String,
}

fn decode_record(bytes: &[u8], hash: &str) -> Result<TokenRecord> {
    if let Ok(record) = serde_json::from_slice::<TokenRecord>(bytes) {
        return Ok(record);
    }
    let legacy: LegacyRecord = serde_json::from_slice(bytes)?;
    let identity = match legacy.role.as_str() {
        "admin" => Identity::Admin,
        _ => Identity::Join,
    };
    Ok(TokenRecord {
        id: hash[..16].to_string(),
        identity,
        created_at: legacy.created_at,
        expires_at: None,
    })
}

impl From<TokenRecord> for TokenInfo {
    fn from(r: TokenRecord) -> Self {
        TokenInfo {
            id: r.id,
            identity: r.identity,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

/// An authenticated caller: who, and which token (for audit and watch caps).
#[derive(Clone, Debug)]
pub struct Authenticated {
    pub identity: Identity,
    pub token_id: String,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random 256-bit secret, as hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    hex::encode(bytes)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads `DIR/NAME`, or creates it with a fresh secret (owner-only permissions).
pub fn secret_file(dir: &Path, name: &str) -> std::io::Result<String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = new_secret();
    reef_api::config::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// The tokens of a cluster's first member, as written into its data dir.
pub struct BootstrapTokens {
    pub admin: String,
    /// For nodes (`join.token`).
    pub join: String,
    /// For control-plane members (`member.token`).
    pub member: String,
}

/// The keys of a tenant's tokens, deleted with the tenant.
pub fn tenant_token_keys(store: &Store, tenant: &str) -> Result<Vec<String>> {
    let (kvs, _) = store.range(TOKENS)?;
    let mut keys = Vec::new();
    for kv in kvs {
        let hash = kv.key.trim_start_matches(TOKENS);
        let record = decode_record(&kv.value, hash)?;
        if matches!(&record.identity, Identity::Tenant { tenant: t, .. } if t == tenant) {
            keys.push(kv.key);
        }
    }
    Ok(keys)
}

#[derive(Clone)]
pub struct Credentials {
    store: Arc<Store>,
}

impl Credentials {
    pub fn new(store: Arc<Store>) -> Credentials {
        Credentials { store }
    }

    /// Who `token` speaks for; `None` if it is unknown, revoked or expired.
    pub fn authenticate(&self, token: &str) -> Result<Option<Authenticated>> {
        let hash = hash(token);
        let Some(kv) = self.store.get(&format!("{TOKENS}{hash}"))? else {
            return Ok(None);
        };
        let record = decode_record(&kv.value, &hash)?;
        if record.expires_at.is_some_and(|at| at <= now_unix()) {
            return Ok(None);
        }
        Ok(Some(Authenticated {
            identity: record.identity,
            token_id: record.id,
        }))
    }

    /// Stores a token's hash for `identity`; `only_if_absent` makes it
    /// idempotent for bootstrap (a restart keeps the first record).
    async fn store_token(
        &self,
        token: &str,
        identity: Identity,
        ttl: Option<Duration>,
        extra: Vec<(Check, Op)>,
    ) -> Result<TokenInfo> {
        let key = format!("{TOKENS}{}", hash(token));
        let id: [u8; 8] = rand::thread_rng().gen();
        let record = TokenRecord {
            id: hex::encode(id),
            identity,
            created_at: reef_api::now_rfc3339(),
            expires_at: ttl.map(|ttl| now_unix().saturating_add(ttl.as_secs().max(1))),
        };
        let mut txn = Txn {
            checks: vec![Check::Absent { key: key.clone() }],
            ops: vec![Op::Put {
                key,
                value: serde_json::to_vec(&record)?,
            }],
        };
        for (check, op) in extra {
            txn.checks.push(check);
            txn.ops.push(op);
        }
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(RegistryError::Conflict(
                "the credential changed meanwhile; try again".into(),
            ));
        }
        Ok(record.into())
    }

    /// Mints a token for `identity`; the secret is returned once and never stored.
    pub async fn create_token(
        &self,
        identity: Identity,
        ttl: Option<Duration>,
    ) -> Result<(TokenInfo, String)> {
        let secret = new_secret();
        let info = self.store_token(&secret, identity, ttl, vec![]).await?;
        Ok((info, secret))
    }

    /// Tokens, optionally only a tenant's, oldest first.
    pub fn list_tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>> {
        let (kvs, _) = self.store.range(TOKENS)?;
        let mut tokens = Vec::new();
        for kv in kvs {
            let record = decode_record(&kv.value, kv.key.trim_start_matches(TOKENS))?;
            let shown = match tenant {
                None => true,
                Some(t) => {
                    matches!(&record.identity, Identity::Tenant { tenant, .. } if tenant == t)
                }
            };
            if shown {
                tokens.push(TokenInfo::from(record));
            }
        }
        tokens.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(tokens)
    }

    /// Revokes the token with this id (within `tenant`'s tokens if given).
    pub async fn revoke(&self, id: &str, tenant: Option<&str>) -> Result<TokenInfo> {
        let (kvs, _) = self.store.range(TOKENS)?;
        for kv in kvs {
            let record = decode_record(&kv.value, kv.key.trim_start_matches(TOKENS))?;
            if record.id != id {
                continue;
            }
            if let Some(t) = tenant {
                if !matches!(&record.identity, Identity::Tenant { tenant, .. } if tenant == t) {
                    break;
                }
            }
            let mut txn = Txn {
                checks: vec![Check::ModRevision {
                    key: kv.key.clone(),
                    revision: kv.mod_revision,
                }],
                ops: vec![Op::Delete { key: kv.key }],
            };
            if let Identity::Node { node } = &record.identity {
                txn.ops.push(Op::Delete {
                    key: format!("{NODE_CREDENTIALS}{node}"),
                });
            }
            if !self.store.txn(txn).await?.succeeded {
                return Err(RegistryError::Conflict(format!(
                    "token {id} changed meanwhile; try again"
                )));
            }
            return Ok(record.into());
        }
        Err(RegistryError::Missing(format!("no token with id {id:?}")))
    }

    /// Exchanges a join for a credential bound to node `name`: once per name,
    /// so a join token cannot take over a node that already has one (revoke
    /// that node's credential first to re-register the name).
    pub async fn issue_node_credential(&self, node: &str) -> Result<String> {
        reef_api::validate::dns_subdomain(node)
            .map_err(|m| RegistryError::Invalid(reef_api::validate::FieldError::new("node", m)))?;
        let index = format!("{NODE_CREDENTIALS}{node}");
        if self.store.get(&index)?.is_some() {
            return Err(RegistryError::Conflict(format!(
                "node {node:?} already has a credential: a node keeps it in its data dir; \
                 to register a new machine under this name, revoke the old one (reef token list, reef token revoke ID)"
            )));
        }
        let secret = new_secret();
        let id_holder = Check::Absent { key: index.clone() };
        // The index names the token by hash prefix; the id is in the record.
        let put_index = Op::Put {
            key: index,
            value: hash(&secret).into_bytes(),
        };
        self.store_token(
            &secret,
            Identity::Node {
                node: node.to_string(),
            },
            None,
            vec![(id_holder, put_index)],
        )
        .await
        .map_err(|e| match e {
            RegistryError::Conflict(_) => {
                RegistryError::Conflict(format!("node {node:?} was given a credential meanwhile"))
            }
            other => other,
        })?;
        Ok(secret)
    }

    /// Registers a token from a file at bootstrap (idempotent).
    async fn register(&self, token: &str, identity: Identity) -> Result<()> {
        if self
            .store
            .get(&format!("{TOKENS}{}", hash(token)))?
            .is_some()
        {
            return Ok(());
        }
        match self.store_token(token, identity, None, vec![]).await {
            Ok(_) | Err(RegistryError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Ensures `admin.token`, `join.token` and `member.token` exist in `dir` and
    /// are known to the store.
    pub async fn bootstrap(&self, dir: &Path) -> Result<BootstrapTokens> {
        let io = |e: std::io::Error| {
            RegistryError::Internal(format!("token file in {}: {e}", dir.display()))
        };
        let tokens = BootstrapTokens {
            admin: secret_file(dir, "admin.token").map_err(io)?,
            join: secret_file(dir, "join.token").map_err(io)?,
            member: secret_file(dir, "member.token").map_err(io)?,
        };
        self.register(&tokens.admin, Identity::Admin).await?;
        self.register(&tokens.join, Identity::Join).await?;
        self.register(&tokens.member, Identity::Member).await?;
        Ok(tokens)
    }

    /// The Raft secret as the key space holds it (for joining members).
    pub fn raft_secret(&self) -> Result<Option<String>> {
        Ok(self
            .store
            .get(RAFT_SECRET_KEY)?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// Makes the key space hold this member's Raft secret, so joiners fetch it
    /// and backups carry it. Normally a no-op; after a restore (which mints a
    /// new secret, so members of the old cluster cannot reach the restored one)
    /// it replaces the old one.
    pub async fn publish_raft_secret(&self, secret: &str) -> Result<()> {
        self.put_secret(RAFT_SECRET_KEY, secret).await
    }

    async fn put_secret(&self, key: &str, secret: &str) -> Result<()> {
        let current = self.store.get(key)?;
        if current
            .as_ref()
            .is_some_and(|kv| kv.value == secret.as_bytes())
        {
            return Ok(());
        }
        let check = match &current {
            Some(kv) => Check::ModRevision {
                key: key.to_string(),
                revision: kv.mod_revision,
            },
            None => Check::Absent {
                key: key.to_string(),
            },
        };
        self.store
            .txn(Txn {
                checks: vec![check],
                ops: vec![Op::Put {
                    key: key.to_string(),
                    value: secret.as_bytes().to_vec(),
                }],
            })
            .await?;
        Ok(())
    }

    /// The cluster CA, if the cluster has one.
    pub fn cluster_ca(&self) -> Result<Option<crate::tls::ClusterCa>> {
        match self.store.get(CA_KEY)? {
            Some(kv) => Ok(Some(serde_json::from_slice(&kv.value)?)),
            None => Ok(None),
        }
    }

    /// Makes the key space hold the cluster CA (kept if one is there already).
    pub async fn publish_ca(&self, ca: &crate::tls::ClusterCa) -> Result<()> {
        if self.store.get(CA_KEY)?.is_some() {
            return Ok(());
        }
        self.store
            .txn(Txn {
                checks: vec![Check::Absent { key: CA_KEY.into() }],
                ops: vec![Op::Put {
                    key: CA_KEY.into(),
                    value: serde_json::to_vec(ca)?,
                }],
            })
            .await?;
        Ok(())
    }

    /// The key node-to-node requests are signed with, minted on first use.
    pub async fn node_access_key(&self) -> Result<String> {
        if let Some(kv) = self.store.get(NODE_ACCESS_KEY)? {
            return Ok(String::from_utf8_lossy(&kv.value).into_owned());
        }
        let secret = new_secret();
        // Only if still absent: two members minting at once agree on the first.
        self.store
            .txn(Txn {
                checks: vec![Check::Absent {
                    key: NODE_ACCESS_KEY.into(),
                }],
                ops: vec![Op::Put {
                    key: NODE_ACCESS_KEY.into(),
                    value: secret.into_bytes(),
                }],
            })
            .await?;
        self.store
            .get(NODE_ACCESS_KEY)?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            .ok_or_else(|| RegistryError::Internal("the node-access key vanished".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_records_keep_working() {
        let admin = decode_record(br#"{"role":"admin","created_at":"x"}"#, &"a".repeat(64))
            .expect("legacy admin");
        assert_eq!(admin.identity, Identity::Admin);
        let join = decode_record(br#"{"role":"node","created_at":"x"}"#, &"b".repeat(64))
            .expect("legacy node");
        assert_eq!(join.identity, Identity::Join);
    }

    #[test]
    fn identities_round_trip() {
        let tenant = Identity::Tenant {
            tenant: "acme".into(),
            role: TenantRole::Edit,
        };
        let json = serde_json::to_string(&tenant).expect("encodes");
        assert_eq!(json, r#"{"kind":"tenant","tenant":"acme","role":"edit"}"#);
        assert_eq!(
            serde_json::from_str::<Identity>(&json).expect("decodes"),
            tenant
        );
        assert!(TenantRole::View < TenantRole::Edit && TenantRole::Edit < TenantRole::Admin);
    }
}
