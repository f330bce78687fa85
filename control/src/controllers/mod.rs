//! Controllers that run inside the control-plane process.
