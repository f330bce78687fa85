//! Controllers that run inside the control-plane process. Each is a level-triggered,
//! idempotent reconcile loop over the in-process [`Api`](crate::apiserver::Api), one per file.
//!
//! - [`namespace`]: empties a terminating namespace, then removes it; gives every namespace its
//!   `default` ServiceAccount.

pub mod namespace;
