//! List and watch filters from the query string: `labels=k=v,k2=v2` and, for pods,
//! `node=NAME` (what a node agent watches).

use crate::apiserver::error::ApiFailure;
use crate::registry::{label_selector, node_selector};
use crate::store::Selector;
use reef_api::RawObject;
use serde_json::Value;
use std::collections::HashMap;

#[derive(Clone, Debug, Default)]
pub struct Filter {
    labels: Vec<(String, String)>,
    node: Option<String>,
}

impl Filter {
    pub fn from_query(query: &HashMap<String, String>) -> Result<Filter, ApiFailure> {
        let mut filter = Filter::default();
        if let Some(selector) = query.get("labels") {
            for pair in selector.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    ApiFailure::bad_request(format!(
                        "label selector {pair:?} is not key=value (e.g. labels=app=hello)"
                    ))
                })?;
                filter.labels.push((k.to_string(), v.to_string()));
            }
        }
        filter.node = query.get("node").cloned();
        Ok(filter)
    }

    /// One term of the filter the store can look up (a watcher is woken by
    /// matching changes only): the node, which a node agent watches by, or
    /// else the first label. `matches` still checks the whole filter.
    pub fn selector(&self) -> Option<Selector> {
        if let Some(node) = &self.node {
            return Some(node_selector(node));
        }
        let (key, value) = self.labels.first()?;
        Some(label_selector(key, value))
    }

    pub fn matches(&self, obj: &RawObject) -> bool {
        let labels_match = self
            .labels
            .iter()
            .all(|(k, v)| obj.metadata.labels.get(k) == Some(v));
        let node_match = match &self.node {
            Some(node) => obj.spec.get("node").and_then(Value::as_str) == Some(node.as_str()),
            None => true,
        };
        labels_match && node_match
    }
}
