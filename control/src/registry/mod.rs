//! The OCI distribution registry served on the API server listener (being written).
