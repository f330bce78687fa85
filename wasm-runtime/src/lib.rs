//! Flotilla WebAssembly engine (being written).
