//! The `flotilla` command line: parses arguments and dispatches to one module per subcommand.

mod commands;

/// mimalloc instead of glibc's malloc: the API server, controllers and agent allocate and free
/// many small JSON values per request, where glibc's allocator took a quarter to a third of
/// the CPU (`malloc_consolidate`, `_int_malloc`) in `perf` profiles of `flotilla bench api`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line: the error and its causes.
            let mut msg = format!("error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            eprintln!("{msg}");
            std::process::ExitCode::FAILURE
        }
    }
}
