//! Raft RPCs to other members over HTTP: `POST http://{advertise}/raft/{rpc}`
//! with MessagePack bodies and the cluster's bearer secret.
//!
//! Errors are sorted the way openraft acts on them: a peer we cannot connect
//! to is `Unreachable` (openraft backs off), a slow one is `Timeout`, a body
//! the server refused as too large is `PayloadTooLarge` (openraft sends fewer
//! entries), a Raft-level refusal is `RemoteError`, the rest is `Network`.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RemoteError, Timeout, Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, RPCTypes, RaftNetwork, RaftNetworkFactory};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::rpc::{SnapshotChunk, MSGPACK, PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use super::types::{Node, NodeId, RaftError, RpcError, TypeConfig};

/// Creates one [`Peer`] per target; all share one connection pool.
#[derive(Clone)]
pub(crate) struct Network {
    id: NodeId,
    client: reqwest::Client,
    secret: Arc<str>,
}

/// The HTTP client members call each other with (one pool per member),
/// trusting only the cluster CA when members serve HTTPS.
pub(crate) fn http_client(ca_pem: Option<&str>) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        // Members talk directly; an environment proxy must not sit in between.
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .tls_built_in_root_certs(false);
    if let Some(pem) = ca_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
    }
    builder.build()
}

/// The base URL of a member's address: `https://host:port` as given, or
/// `host:port` meaning plain HTTP.
pub(crate) fn member_url(address: &str) -> String {
    if address.contains("://") {
        address.trim_end_matches('/').to_string()
    } else {
        format!("http://{address}")
    }
}

impl Network {
    pub(crate) fn new(id: NodeId, secret: Arc<str>, client: reqwest::Client) -> Self {
        Network { id, client, secret }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            net: self.clone(),
            target,
            node: node.clone(),
            base: member_url(&node.addr),
        }
    }
}

pub(crate) struct Peer {
    net: Network,
    target: NodeId,
    node: Node,
    base: String,
}

/// Bytes of AppendEntries body above which a multi-entry batch is split.
const APPEND_BYTES_BUDGET: usize = 2 * 1024 * 1024;

fn network_error(msg: impl ToString) -> NetworkError {
    NetworkError::new(&AnyError::error(msg))
}

#[allow(
    clippy::result_large_err,
    reason = "openraft's error type, returned as is"
)]
fn encode<T: Serialize, E: std::error::Error>(value: &T) -> Result<Vec<u8>, RpcError<E>> {
    rmp_serde::to_vec_named(value).map_err(|e| RpcError::Network(NetworkError::new(&e)))
}

/// How many of `n` entries (encoding to `bytes`) fit in `budget`; at least 1,
/// and fewer than `n` so the retry makes progress.
fn entries_hint(n: usize, bytes: usize, budget: usize) -> u64 {
    let fit = (n as u128 * budget as u128 / bytes.max(1) as u128) as u64;
    fit.clamp(1, (n as u64).saturating_sub(1).max(1))
}

impl Peer {
    async fn call<Resp, E>(
        &self,
        action: RPCTypes,
        path: &str,
        body: Vec<u8>,
        option: &RPCOption,
        entries: usize,
    ) -> Result<Resp, RpcError<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let timeout = option.hard_ttl();
        let sent = self
            .net
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&*self.net.secret)
            .header(reqwest::header::CONTENT_TYPE, MSGPACK)
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) if e.is_connect() => return Err(RpcError::Unreachable(Unreachable::new(&e))),
            Err(e) if e.is_timeout() => {
                return Err(RpcError::Timeout(Timeout {
                    action,
                    id: self.net.id,
                    target: self.target,
                    timeout,
                }))
            }
            Err(e) => return Err(RpcError::Network(NetworkError::new(&e))),
        };
        let status = resp.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE && action == RPCTypes::AppendEntries {
            let hint = (entries / 2).max(1) as u64;
            return Err(RpcError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => {
                return Err(RpcError::Timeout(Timeout {
                    action,
                    id: self.net.id,
                    target: self.target,
                    timeout,
                }))
            }
            Err(e) => return Err(RpcError::Network(NetworkError::new(&e))),
        };
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(RpcError::Network(network_error(format!(
                "{action} to member {} answered {status}: {text}",
                self.target
            ))));
        }
        let result: Result<Resp, RaftError<E>> = rmp_serde::from_slice(&bytes).map_err(|e| {
            RpcError::Network(network_error(format!("undecodable {action} reply: {e}")))
        })?;
        result.map_err(|e| {
            RpcError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        let n = rpc.entries.len();
        let body = encode(&rpc)?;
        // openraft gives AppendEntries one heartbeat interval: a batch of blob
        // chunks that cannot cross in time would time out forever. Ask for
        // fewer entries instead (a single entry is always sent).
        if n > 1 && body.len() > APPEND_BYTES_BUDGET {
            let hint = entries_hint(n, body.len(), APPEND_BYTES_BUDGET);
            return Err(RpcError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(hint),
            ));
        }
        self.call(RPCTypes::AppendEntries, PATH_APPEND, body, &option, n)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        let body = encode(&SnapshotChunk::from(rpc))?;
        self.call(RPCTypes::InstallSnapshot, PATH_SNAPSHOT, body, &option, 0)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcError> {
        let body = encode(&rpc)?;
        self.call(RPCTypes::Vote, PATH_VOTE, body, &option, 0).await
    }
}

#[cfg(test)]
mod tests {
    use super::entries_hint;

    #[test]
    fn entries_hint_shrinks_to_the_budget() {
        assert_eq!(entries_hint(10, 20, 10), 5);
        assert_eq!(entries_hint(3, 1000, 1), 1);
        assert_eq!(entries_hint(4, 5, 4), 3);
        assert_eq!(entries_hint(2, 3, 100), 1);
    }
}
