//! The one authorizer: every API request is classified from its method and path
//! ([`classify`]) and decided by one table of identity × request ([`decide`])
//! before any handler runs. A request the table does not know is refused.
//!
//! Some permissions depend on stored state (a node may touch only the pods
//! bound to it, a tenant may read only components uploaded to its namespace):
//! the table answers [`Decision::AllowIf`] and [`holds`] reads the registry.
//! Handlers that act on objects named in a body (apply, token creation) ask the
//! same table once per object.

use crate::credentials::{Identity, TenantRole};
use crate::registry::{blob_claim_key, Registry, Result};
use axum::http;
use reef_api::{Kind, PodSpec};
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    List,
    Watch,
    Get,
    Put,
    PutStatus,
    Delete,
}

/// What a request asks to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Objects {
        verb: Verb,
        kind: Kind,
        namespace: Option<String>,
        name: Option<String>,
        /// A pod list's `node=` filter (what a node agent asks for).
        node: Option<String>,
    },
    Apply,
    BlobRead {
        digest: String,
    },
    BlobWrite,
    BlobDelete,
    PodLog {
        namespace: String,
        pod: String,
    },
    Members,
    AddMember,
    RemoveMember,
    /// The Raft secret, for a joining member.
    JoinInfo,
    /// The key that signs node-to-node requests.
    NodeAccess,
    /// A join token exchanged for node `node`'s credential.
    NodeCredential {
        node: String,
    },
    /// Node `node`'s proxy reports its load to the autoscaler.
    NodeLoad {
        node: String,
    },
    Backup,
    TokensList,
    TokensCreate,
    TokensRevoke,
    Metrics,
    WhoAmI,
}

/// A permission that holds only if the stored state says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The pod is bound to this node (or no longer exists).
    PodOnNode {
        namespace: String,
        pod: String,
        node: String,
    },
    /// Some pod bound to this node runs this component.
    BlobOnNode { digest: String, node: String },
    /// The component was uploaded to this namespace.
    BlobInNamespace { digest: String, namespace: String },
}

impl Condition {
    /// Whether a refusal should read as "not found": for content-addressed
    /// blobs, a 403 would confirm that someone uploaded those bytes.
    pub fn hides_existence(&self) -> bool {
        matches!(
            self,
            Condition::BlobOnNode { .. } | Condition::BlobInNamespace { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    AllowIf(Condition),
    Deny,
}

fn kind_of(segment: &str) -> Option<Kind> {
    Kind::parse(segment)
}

/// Reads what a request asks for from its method, path and query; `None` for a
/// path the API does not serve (refused as not found).
pub fn classify(
    method: &http::Method,
    path: &str,
    query: &HashMap<String, String>,
) -> Option<Request> {
    use http::Method as M;
    // HEAD is a GET without the body: the same permission.
    let method = if method == M::HEAD { &M::GET } else { method };
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let watch = query.get("watch").is_some_and(|w| w == "1" || w == "true");
    let objects = |verb, kind: &str, namespace: Option<&str>, name: Option<&str>| {
        Some(Request::Objects {
            verb,
            kind: kind_of(kind)?,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            node: query.get("node").cloned(),
        })
    };
    let list = if watch { Verb::Watch } else { Verb::List };
    match (method, segments.as_slice()) {
        (&M::GET, ["metrics"]) => Some(Request::Metrics),
        (_, ["api", "v1", rest @ ..]) => match (method, rest) {
            (&M::POST, ["apply"]) => Some(Request::Apply),
            (&M::GET, ["whoami"]) => Some(Request::WhoAmI),
            (&M::GET, ["blobs", digest]) => Some(Request::BlobRead {
                digest: digest.to_string(),
            }),
            (&M::PUT, ["blobs", _]) => Some(Request::BlobWrite),
            (&M::DELETE, ["blobs", _]) => Some(Request::BlobDelete),
            (&M::GET, ["members"]) => Some(Request::Members),
            (&M::POST, ["members"]) => Some(Request::AddMember),
            (&M::DELETE, ["members", _]) => Some(Request::RemoveMember),
            (&M::GET, ["cluster", "join"]) => Some(Request::JoinInfo),
            (&M::GET, ["cluster", "node-access"]) => Some(Request::NodeAccess),
            (&M::GET, ["admin", "backup"]) => Some(Request::Backup),
            (&M::GET, ["tokens"]) => Some(Request::TokensList),
            (&M::POST, ["tokens"]) => Some(Request::TokensCreate),
            (&M::DELETE, ["tokens", _]) => Some(Request::TokensRevoke),
            (&M::POST, ["nodes", node, "credential"]) => Some(Request::NodeCredential {
                node: node.to_string(),
            }),
            (&M::PUT, ["nodes", node, "load"]) => Some(Request::NodeLoad {
                node: node.to_string(),
            }),
            (&M::GET, ["namespaces", ns, "pods", pod, "log"]) => Some(Request::PodLog {
                namespace: ns.to_string(),
                pod: pod.to_string(),
            }),
            (&M::GET, ["namespaces", ns, kind]) => objects(list, kind, Some(ns), None),
            (&M::GET, ["namespaces", ns, kind, name]) => {
                objects(Verb::Get, kind, Some(ns), Some(name))
            }
            (&M::PUT, ["namespaces", ns, kind, name]) => {
                objects(Verb::Put, kind, Some(ns), Some(name))
            }
            (&M::DELETE, ["namespaces", ns, kind, name]) => {
                objects(Verb::Delete, kind, Some(ns), Some(name))
            }
            (&M::PUT, ["namespaces", ns, kind, name, "status"]) => {
                objects(Verb::PutStatus, kind, Some(ns), Some(name))
            }
            (&M::GET, [kind]) => objects(list, kind, None, None),
            (&M::GET, [kind, name]) => objects(Verb::Get, kind, None, Some(name)),
            (&M::PUT, [kind, name]) => objects(Verb::Put, kind, None, Some(name)),
            (&M::DELETE, [kind, name]) => objects(Verb::Delete, kind, None, Some(name)),
            (&M::PUT, [kind, name, "status"]) => objects(Verb::PutStatus, kind, None, Some(name)),
            _ => None,
        },
        _ => None,
    }
}

/// The table: may `identity` do `request`?
pub fn decide(identity: &Identity, request: &Request) -> Decision {
    use Decision::{Allow, AllowIf, Deny};
    let allow = |ok: bool| if ok { Allow } else { Deny };
    match identity {
        Identity::Admin => Allow,
        Identity::Join => allow(matches!(request, Request::NodeCredential { .. })),
        Identity::Member => allow(matches!(
            request,
            Request::JoinInfo | Request::AddMember | Request::Members | Request::WhoAmI
        )),
        Identity::Node { node } => match request {
            Request::WhoAmI | Request::NodeAccess => Allow,
            Request::NodeLoad { node: reporter } => allow(reporter == node),
            Request::BlobRead { digest } => AllowIf(Condition::BlobOnNode {
                digest: digest.clone(),
                node: node.clone(),
            }),
            Request::Objects {
                verb,
                kind,
                namespace,
                name,
                node: filter,
            } => match (kind, verb, namespace, name) {
                (Kind::Node, Verb::Get | Verb::Put | Verb::PutStatus, None, Some(n)) => {
                    allow(n == node)
                }
                (Kind::Pod, Verb::List | Verb::Watch, None, None) => {
                    allow(filter.as_deref() == Some(node.as_str()))
                }
                (Kind::Pod, Verb::Get | Verb::PutStatus, Some(ns), Some(pod)) => {
                    AllowIf(Condition::PodOnNode {
                        namespace: ns.clone(),
                        pod: pod.clone(),
                        node: node.clone(),
                    })
                }
                // The proxy's route table: every Service with its endpoints.
                (Kind::Service, Verb::List | Verb::Watch, None, None) => Allow,
                // Events are named after what they are about: `POD.reason`.
                (Kind::Event, Verb::Get | Verb::Put, Some(ns), Some(event)) => {
                    match event.rsplit_once('.') {
                        Some((pod, _)) => AllowIf(Condition::PodOnNode {
                            namespace: ns.clone(),
                            pod: pod.to_string(),
                            node: node.clone(),
                        }),
                        None => Deny,
                    }
                }
                _ => Deny,
            },
            _ => Deny,
        },
        Identity::Tenant { tenant, role } => {
            let at_least = |needed: TenantRole| allow(*role >= needed);
            match request {
                Request::WhoAmI => Allow,
                Request::Apply | Request::BlobWrite => at_least(TenantRole::Edit),
                Request::TokensList | Request::TokensCreate | Request::TokensRevoke => {
                    at_least(TenantRole::Admin)
                }
                Request::BlobRead { digest } => AllowIf(Condition::BlobInNamespace {
                    digest: digest.clone(),
                    namespace: tenant.clone(),
                }),
                Request::PodLog { namespace, .. } => allow(namespace == tenant),
                Request::Objects {
                    verb,
                    kind,
                    namespace,
                    name,
                    ..
                } => match (kind, namespace) {
                    (Kind::Tenant, None) => {
                        allow(*verb == Verb::Get && name.as_deref() == Some(tenant.as_str()))
                    }
                    (Kind::Deployment | Kind::Service | Kind::Pod | Kind::Event, Some(ns))
                        if ns == tenant =>
                    {
                        match (verb, kind) {
                            (Verb::List | Verb::Watch | Verb::Get, _) => Allow,
                            (Verb::Put | Verb::Delete, Kind::Deployment | Kind::Service) => {
                                at_least(TenantRole::Edit)
                            }
                            // Pods are made by deployments; a tenant may remove one.
                            (Verb::Delete, Kind::Pod) => at_least(TenantRole::Edit),
                            _ => Deny,
                        }
                    }
                    _ => Deny,
                },
                _ => Deny,
            }
        }
    }
}

/// Whether a [`Condition`] holds now.
pub async fn holds(condition: &Condition, registry: &Registry) -> Result<bool> {
    match condition {
        Condition::PodOnNode {
            namespace,
            pod,
            node,
        } => Ok(match registry.try_get(Kind::Pod, Some(namespace), pod)? {
            Some(pod) => pod.spec.get("node").and_then(|n| n.as_str()) == Some(node),
            None => true,
        }),
        Condition::BlobOnNode { digest, node } => {
            let pods = registry.list_typed::<PodSpec, serde_json::Value>(Kind::Pod, None)?;
            Ok(pods.iter().any(|p| {
                p.spec.node.as_deref() == Some(node.as_str()) && &p.spec.component == digest
            }))
        }
        Condition::BlobInNamespace { digest, namespace } => Ok(registry
            .store()
            .get(&blob_claim_key(namespace, digest))?
            .is_some()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn request(method: Method, path: &str) -> Request {
        classify(&method, path, &HashMap::new()).expect("classified")
    }

    fn tenant(name: &str, role: TenantRole) -> Identity {
        Identity::Tenant {
            tenant: name.into(),
            role,
        }
    }

    #[test]
    fn tenants_stay_in_their_namespace() {
        let edit = tenant("b", TenantRole::Edit);
        let view = tenant("b", TenantRole::View);
        let own = request(Method::PUT, "/api/v1/namespaces/b/deployments/x");
        let other = request(Method::GET, "/api/v1/namespaces/a/deployments/x");
        assert_eq!(decide(&edit, &own), Decision::Allow);
        assert_eq!(decide(&view, &own), Decision::Deny);
        assert_eq!(decide(&edit, &other), Decision::Deny);
        for path in [
            "/api/v1/deployments",
            "/api/v1/nodes",
            "/api/v1/tenants",
            "/api/v1/members",
        ] {
            assert_eq!(
                decide(&edit, &request(Method::GET, path)),
                Decision::Deny,
                "{path}"
            );
        }
        assert_eq!(
            decide(&view, &request(Method::GET, "/api/v1/tenants/b")),
            Decision::Allow
        );
        assert_eq!(
            decide(&view, &request(Method::GET, "/api/v1/tenants/a")),
            Decision::Deny
        );
        assert_eq!(
            decide(&edit, &request(Method::PUT, "/api/v1/tenants/b")),
            Decision::Deny
        );
        assert_eq!(
            decide(
                &edit,
                &request(Method::PUT, "/api/v1/namespaces/b/pods/p/status")
            ),
            Decision::Deny
        );
        assert_eq!(
            decide(&edit, &request(Method::POST, "/api/v1/tokens")),
            Decision::Deny
        );
        assert_eq!(
            decide(
                &tenant("b", TenantRole::Admin),
                &request(Method::POST, "/api/v1/tokens")
            ),
            Decision::Allow
        );
    }

    #[test]
    fn a_node_touches_only_itself_and_its_pods() {
        let node = Identity::Node { node: "n1".into() };
        assert_eq!(
            decide(&node, &request(Method::PUT, "/api/v1/nodes/n1")),
            Decision::Allow
        );
        assert_eq!(
            decide(&node, &request(Method::PUT, "/api/v1/nodes/n2")),
            Decision::Deny
        );
        // Its own load reports, not another node's; no tenant reports any.
        assert_eq!(
            decide(&node, &request(Method::PUT, "/api/v1/nodes/n1/load")),
            Decision::Allow
        );
        assert_eq!(
            decide(&node, &request(Method::PUT, "/api/v1/nodes/n2/load")),
            Decision::Deny
        );
        assert_eq!(
            decide(
                &tenant("n1", TenantRole::Admin),
                &request(Method::PUT, "/api/v1/nodes/n1/load")
            ),
            Decision::Deny
        );
        assert_eq!(
            decide(&node, &request(Method::GET, "/api/v1/pods")),
            Decision::Deny
        );
        let own_pods = classify(
            &Method::GET,
            "/api/v1/pods",
            &HashMap::from([("node".to_string(), "n1".to_string())]),
        )
        .expect("classified");
        assert_eq!(decide(&node, &own_pods), Decision::Allow);
        assert!(matches!(
            decide(
                &node,
                &request(Method::PUT, "/api/v1/namespaces/a/pods/p/status")
            ),
            Decision::AllowIf(Condition::PodOnNode { .. })
        ));
        for denied in [
            request(Method::GET, "/api/v1/cluster/join"),
            request(Method::POST, "/api/v1/members"),
            request(Method::PUT, "/api/v1/namespaces/a/deployments/d"),
            request(Method::GET, "/api/v1/admin/backup"),
        ] {
            assert_eq!(decide(&node, &denied), Decision::Deny, "{denied:?}");
        }
    }

    #[test]
    fn join_and_member_tokens_do_one_thing_each() {
        let join = request(Method::POST, "/api/v1/nodes/n1/credential");
        assert_eq!(decide(&Identity::Join, &join), Decision::Allow);
        assert_eq!(
            decide(
                &Identity::Join,
                &request(Method::GET, "/api/v1/cluster/join")
            ),
            Decision::Deny
        );
        assert_eq!(
            decide(&Identity::Join, &request(Method::GET, "/api/v1/nodes")),
            Decision::Deny
        );
        assert_eq!(
            decide(
                &Identity::Member,
                &request(Method::GET, "/api/v1/cluster/join")
            ),
            Decision::Allow
        );
        assert_eq!(decide(&Identity::Member, &join), Decision::Deny);
        assert_eq!(
            decide(&Identity::Member, &request(Method::GET, "/api/v1/pods")),
            Decision::Deny
        );
    }

    #[test]
    fn unknown_routes_are_not_classified() {
        assert_eq!(classify(&Method::GET, "/raft/vote", &HashMap::new()), None);
        assert_eq!(
            classify(&Method::PATCH, "/api/v1/nodes/x", &HashMap::new()),
            None
        );
        assert_eq!(
            classify(&Method::GET, "/api/v1/gadgets", &HashMap::new()),
            None
        );
    }
}
