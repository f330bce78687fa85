//! End-to-end tests: real `flotilla` processes driven by the real kubectl and the kube crate.

mod harness;

mod api_bad_input;
mod api_durability;
mod api_events_v1;
mod api_kubectl;
mod api_metrics;
mod api_paging;
mod api_server_side_apply;
mod api_watch;
mod bench;
mod containers;
mod controllers;
mod node_agent;
mod quota;
mod services;
mod two_nodes;
