//! reef's control plane: the replicated store and, on top of it, the API
//! server, scheduler and controllers (DESIGN §1).
//!
//! Only [`store`] knows openraft and RocksDB; everything else reaches cluster
//! state through [`store::Store`] and never touches the data directory.

pub mod apiserver;
pub mod autoscaler;
pub mod controllers;
pub mod credentials;
pub mod events;
pub mod member;
pub mod quota;
mod reconcile;
pub mod registry;
pub mod scheduler;
pub mod store;
pub mod tls;
