//! Integration tests of the engine: loading, commands, HTTP services, the
//! compile cache, limits and neighbour isolation. One test binary, so wasmtime
//! is linked once. Guests come from the committed samples (`samples/`) and
//! from the WAT fixtures in `tests/fixtures/`; no guest toolchain is needed.

mod cache;
mod command;
mod common;
mod http;
mod isolation;
mod load;
mod usage;
