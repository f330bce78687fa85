//! Kubeconfig writing.
