//! Adapters behind the ports defined in `workflows`: GitHub (octocrab), records stores (sled,
//! PostgreSQL) and clusters (kube). Each adapter lives in its own module and is selected by
//! configuration in the engine.

pub mod cluster;
pub mod github;
pub mod records;
