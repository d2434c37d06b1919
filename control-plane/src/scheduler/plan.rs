//! Placement as a pure function: feasibility filters, then scorers, over an
//! immutable snapshot of nodes. No IO, so every decision is unit-testable.

use reef_api::{Node, Pod, PodSpec, Resources};
use std::collections::{BTreeMap, HashMap};

/// How to rank feasible nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Policy {
    /// Least-allocated first: spreads load.
    #[default]
    Spread,
    /// Most-allocated first: packs nodes to leave others empty.
    BinPack,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spread" => Ok(Policy::Spread),
            "binpack" => Ok(Policy::BinPack),
            other => Err(format!(
                "unknown scheduler policy {other:?}: use spread or binpack"
            )),
        }
    }
}

/// Why a node cannot take a pod; ordered as the filters run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    NotReady,
    Cordoned,
    RuntimeMissing,
    SelectorMismatch,
    TooManyPods,
    InsufficientCpu,
    InsufficientMemory,
}

impl Reason {
    pub fn text(self) -> &'static str {
        match self {
            Reason::NotReady => "not ready",
            Reason::Cordoned => "cordoned",
            Reason::RuntimeMissing => "runtime not offered",
            Reason::SelectorMismatch => "node_selector mismatch",
            Reason::TooManyPods => "too many pods",
            Reason::InsufficientCpu => "insufficient cpu",
            Reason::InsufficientMemory => "insufficient memory",
        }
    }
}

/// A node as the scheduler sees it: what it offers and what is already claimed.
#[derive(Clone, Debug)]
pub struct NodeView {
    pub name: String,
    pub ready: bool,
    pub cordoned: bool,
    pub labels: BTreeMap<String, String>,
    pub runtimes: Vec<reef_api::RuntimeKind>,
    pub allocatable: Resources,
    pub used_cpu: u64,
    pub used_memory: u64,
    pub used_pods: u32,
    /// Pods per owner (deployment uid) on this node, to spread replicas.
    pub owners: HashMap<String, u32>,
}

impl NodeView {
    pub fn new(node: &Node) -> NodeView {
        NodeView {
            name: node.metadata.name.clone(),
            ready: node.status.is_ready(),
            cordoned: node.spec.unschedulable,
            labels: node.metadata.labels.clone(),
            runtimes: node.spec.runtimes.clone(),
            allocatable: node.spec.allocatable,
            used_cpu: 0,
            used_memory: 0,
            used_pods: 0,
            owners: HashMap::new(),
        }
    }

    /// Claims a pod's requests on this node.
    pub fn claim(&mut self, pod: &Pod) {
        // Saturating: admission caps these far below overflow, but a plan must
        // never panic on what is stored.
        self.used_cpu = self.used_cpu.saturating_add(pod.spec.cpu.millis());
        self.used_memory = self.used_memory.saturating_add(pod.spec.memory.bytes());
        self.used_pods += 1;
        if let Some(owner) = &pod.metadata.owner {
            *self.owners.entry(owner.uid.clone()).or_default() += 1;
        }
    }

    fn check(&self, spec: &PodSpec) -> Result<(), Reason> {
        if !self.ready {
            return Err(Reason::NotReady);
        }
        if self.cordoned {
            return Err(Reason::Cordoned);
        }
        if !self.runtimes.is_empty() && !self.runtimes.contains(&spec.runtime) {
            return Err(Reason::RuntimeMissing);
        }
        if spec
            .node_selector
            .iter()
            .any(|(k, v)| self.labels.get(k) != Some(v))
        {
            return Err(Reason::SelectorMismatch);
        }
        if self.used_pods + 1 > self.allocatable.pods {
            return Err(Reason::TooManyPods);
        }
        if self.used_cpu.saturating_add(spec.cpu.millis()) > self.allocatable.cpu.millis() {
            return Err(Reason::InsufficientCpu);
        }
        if self.used_memory.saturating_add(spec.memory.bytes()) > self.allocatable.memory.bytes() {
            return Err(Reason::InsufficientMemory);
        }
        Ok(())
    }

    /// Fraction of the node left free after placing `spec`, averaged over cpu and memory.
    fn free_after(&self, spec: &PodSpec) -> f64 {
        let frac = |used: u64, request: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                1.0 - used.saturating_add(request) as f64 / total as f64
            }
        };
        let cpu = frac(
            self.used_cpu,
            spec.cpu.millis(),
            self.allocatable.cpu.millis(),
        );
        let memory = frac(
            self.used_memory,
            spec.memory.bytes(),
            self.allocatable.memory.bytes(),
        );
        (cpu + memory) / 2.0
    }
}

/// The outcome for one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Bind(String),
    /// Counts of nodes rejected per reason, and how many nodes were considered.
    Unschedulable {
        reasons: BTreeMap<Reason, usize>,
        nodes: usize,
    },
}

impl Decision {
    /// `0/3 nodes fit: 2 insufficient memory, 1 not ready`.
    pub fn message(&self) -> Option<String> {
        let Decision::Unschedulable { reasons, nodes } = self else {
            return None;
        };
        if *nodes == 0 {
            return Some("0/0 nodes fit: no nodes are registered".to_string());
        }
        let mut parts: Vec<(usize, Reason)> = reasons.iter().map(|(r, n)| (*n, *r)).collect();
        parts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let text: Vec<String> = parts
            .iter()
            .map(|(n, r)| format!("{n} {}", r.text()))
            .collect();
        Some(format!("0/{nodes} nodes fit: {}", text.join(", ")))
    }
}

/// Places `pods` in order, claiming resources as it goes so one batch never
/// overcommits a node.
pub fn place(pods: &[&Pod], nodes: &mut [NodeView], policy: Policy) -> Vec<Decision> {
    pods.iter()
        .map(|pod| place_one(pod, nodes, policy))
        .collect()
}

/// Weight of one same-deployment pod against free capacity, so replicas spread
/// across nodes unless capacity differs a lot.
const SPREAD_WEIGHT: f64 = 0.1;

fn place_one(pod: &Pod, nodes: &mut [NodeView], policy: Policy) -> Decision {
    let mut reasons: BTreeMap<Reason, usize> = BTreeMap::new();
    let mut best: Option<(f64, usize)> = None;
    let owner = pod.metadata.owner.as_ref().map(|o| o.uid.as_str());
    for (i, node) in nodes.iter().enumerate() {
        if let Err(reason) = node.check(&pod.spec) {
            *reasons.entry(reason).or_default() += 1;
            continue;
        }
        let free = node.free_after(&pod.spec);
        let capacity_score = match policy {
            Policy::Spread => free,
            Policy::BinPack => -free,
        };
        let siblings = owner.and_then(|o| node.owners.get(o)).copied().unwrap_or(0);
        let score = capacity_score - SPREAD_WEIGHT * f64::from(siblings);
        // Ties go to the first node by name order of the snapshot: deterministic.
        if best.is_none_or(|(s, _)| score > s + 1e-9) {
            best = Some((score, i));
        }
    }
    match best {
        Some((_, i)) => {
            nodes[i].claim(pod);
            Decision::Bind(nodes[i].name.clone())
        }
        None => Decision::Unschedulable {
            reasons,
            nodes: nodes.len(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reef_api::quantity::{Cpu, Memory};
    use reef_api::*;

    fn node(name: &str, cpu: u64, mem_mi: u64) -> NodeView {
        NodeView {
            name: name.into(),
            ready: true,
            cordoned: false,
            labels: Default::default(),
            runtimes: vec![RuntimeKind::Wasmtime],
            allocatable: Resources {
                cpu: Cpu(cpu),
                memory: Memory(mem_mi << 20),
                pods: 100,
            },
            used_cpu: 0,
            used_memory: 0,
            used_pods: 0,
            owners: Default::default(),
        }
    }

    fn pod(cpu: u64, mem_mi: u64) -> Pod {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "component": "sha256:00", "cpu": format!("{cpu}m"), "memory": format!("{mem_mi}Mi")
        }))
        .expect("spec");
        Object {
            kind: Kind::Pod,
            metadata: Metadata {
                name: "p".into(),
                ..Default::default()
            },
            spec,
            status: PodStatus::default(),
        }
    }

    #[test]
    fn spread_puts_equal_share_on_equal_nodes() {
        let mut nodes = vec![
            node("a", 1000, 512),
            node("b", 1000, 512),
            node("c", 1000, 512),
        ];
        let pods: Vec<Pod> = (0..12).map(|_| pod(200, 64)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let decisions = place(&refs, &mut nodes, Policy::Spread);
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for d in decisions {
            match d {
                Decision::Bind(n) => *counts.entry(n).or_default() += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![4, 4, 4]);
        for n in &nodes {
            assert!(n.used_cpu <= 1000 && n.used_memory <= 512 << 20);
        }
    }

    #[test]
    fn binpack_fills_one_node_first() {
        let mut nodes = vec![node("a", 1000, 512), node("b", 1000, 512)];
        let pods: Vec<Pod> = (0..3).map(|_| pod(200, 64)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let decisions = place(&refs, &mut nodes, Policy::BinPack);
        assert!(decisions.iter().all(|d| *d == Decision::Bind("a".into())));
    }

    #[test]
    fn unschedulable_counts_reasons_per_node() {
        let mut nodes = vec![
            node("a", 1000, 512),
            node("b", 1000, 512),
            node("c", 1000, 512),
        ];
        nodes[2].ready = false;
        let big = pod(100, 1024);
        let decisions = place(&[&big], &mut nodes, Policy::Spread);
        assert_eq!(
            decisions[0].message().as_deref(),
            Some("0/3 nodes fit: 2 insufficient memory, 1 not ready")
        );
    }

    #[test]
    fn batch_never_overcommits() {
        let mut nodes = vec![node("a", 500, 512)];
        let pods: Vec<Pod> = (0..3).map(|_| pod(200, 64)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let decisions = place(&refs, &mut nodes, Policy::Spread);
        assert_eq!(decisions[0], Decision::Bind("a".into()));
        assert_eq!(decisions[1], Decision::Bind("a".into()));
        assert!(matches!(decisions[2], Decision::Unschedulable { .. }));
    }

    #[test]
    fn selectors_runtimes_cordons_and_slots_filter_nodes() {
        let mut nodes = vec![
            node("a", 1000, 512),
            node("b", 1000, 512),
            node("c", 1000, 512),
            node("d", 1000, 512),
        ];
        nodes[0].labels.insert("zone".into(), "x".into());
        nodes[1].cordoned = true;
        nodes[2].allocatable.pods = 0;
        nodes[2].labels.insert("zone".into(), "y".into());
        nodes[3].runtimes = vec![RuntimeKind::Containerd];
        let mut picky = pod(100, 64);
        picky.spec.node_selector.insert("zone".into(), "x".into());
        let decisions = place(&[&picky], &mut nodes, Policy::Spread);
        assert_eq!(decisions[0], Decision::Bind("a".into()));
        let mut elsewhere = pod(100, 64);
        elsewhere
            .spec
            .node_selector
            .insert("zone".into(), "y".into());
        let decisions = place(&[&elsewhere], &mut nodes, Policy::Spread);
        assert_eq!(
            decisions[0].message().as_deref(),
            Some("0/4 nodes fit: 1 cordoned, 1 runtime not offered, 1 node_selector mismatch, 1 too many pods")
        );
        let mut containerd = pod(100, 64);
        containerd.spec.runtime = RuntimeKind::Containerd;
        let decisions = place(&[&containerd], &mut nodes, Policy::Spread);
        assert_eq!(decisions[0], Decision::Bind("d".into()));
    }
}
