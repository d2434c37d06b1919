//! The client's calls for running the cluster rather than its workloads:
//! members, backups, tokens and node credentials.

use super::{error_chain, Client, ClientError, Member, NodeAccess, Result};
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;

impl Client {
    /// The control-plane members as the answering member sees them.
    pub async fn members(&self) -> Result<Vec<Member>> {
        self.json(reqwest::Method::GET, "/api/v1/members", None::<&()>)
            .await
    }

    /// Adds a member (learner, then voter once caught up); returns the new membership.
    pub async fn add_member(&self, id: u64, address: &str) -> Result<Vec<Member>> {
        let body = serde_json::json!({"id": id, "address": address});
        // The answer comes once the new member has caught up: allow for a big snapshot.
        self.json_within(
            reqwest::Method::POST,
            "/api/v1/members",
            Some(&body),
            Duration::from_secs(600),
        )
        .await
    }

    pub async fn remove_member(&self, id: u64) -> Result<Vec<Member>> {
        self.json(
            reqwest::Method::DELETE,
            &format!("/api/v1/members/{id}"),
            None::<&()>,
        )
        .await
    }

    /// Streams a consistent backup into `file`; returns (revision, sha256 hex, bytes).
    pub async fn backup(&self, file: &std::path::Path) -> Result<(u64, String, u64)> {
        use tokio::io::AsyncWriteExt;
        let response = self
            .send(
                reqwest::Method::GET,
                "/api/v1/admin/backup",
                None,
                Some(Duration::from_secs(3600)),
            )
            .await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_default()
        };
        let revision = header("x-reef-revision").parse().unwrap_or(0);
        let checksum = header("x-reef-sha256");
        let io = |e: std::io::Error| ClientError::Decode(format!("{}: {e}", file.display()));
        let mut out = tokio::fs::File::create(file).await.map_err(io)?;
        let mut stream = response.bytes_stream();
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ClientError::Decode(error_chain(&e)))?;
            out.write_all(&chunk).await.map_err(io)?;
            written += chunk.len() as u64;
        }
        out.sync_all().await.map_err(io)?;
        Ok((revision, checksum, written))
    }

    /// The secret the control plane shows nodes when it asks them for logs
    /// (node and admin tokens only).
    pub async fn node_access(&self) -> Result<String> {
        let answer: NodeAccess = self
            .json(
                reqwest::Method::GET,
                "/api/v1/cluster/node-access",
                None::<&()>,
            )
            .await?;
        Ok(answer.secret)
    }

    /// Exchanges this client's join token for node `node`'s own credential.
    pub async fn node_credential(&self, node: &str) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Issued {
            token: String,
        }
        let issued: Issued = self
            .json(
                reqwest::Method::POST,
                &format!("/api/v1/nodes/{node}/credential"),
                None::<&()>,
            )
            .await?;
        Ok(issued.token)
    }

    /// Sends node `node`'s load report to the autoscaler.
    pub async fn report_load(&self, node: &str, report: &crate::LoadReport) -> Result<()> {
        let body = Bytes::from(
            serde_json::to_vec(report).map_err(|e| ClientError::Decode(e.to_string()))?,
        );
        self.send(
            reqwest::Method::PUT,
            &format!("/api/v1/nodes/{node}/load"),
            Some((body, "application/json")),
            Some(Duration::from_secs(2)),
        )
        .await?;
        Ok(())
    }

    /// Mints a tenant token (shown once).
    pub async fn create_token(
        &self,
        request: &crate::identity::TokenRequest,
    ) -> Result<crate::identity::IssuedToken> {
        self.json(reqwest::Method::POST, "/api/v1/tokens", Some(request))
            .await
    }

    /// Tokens the caller may manage, without their secrets.
    pub async fn list_tokens(&self) -> Result<Vec<crate::identity::TokenInfo>> {
        #[derive(serde::Deserialize)]
        struct Tokens {
            items: Vec<crate::identity::TokenInfo>,
        }
        let tokens: Tokens = self
            .json(reqwest::Method::GET, "/api/v1/tokens", None::<&()>)
            .await?;
        Ok(tokens.items)
    }

    pub async fn revoke_token(&self, id: &str) -> Result<crate::identity::TokenInfo> {
        self.json(
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None::<&()>,
        )
        .await
    }
}
