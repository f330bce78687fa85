//! hello-wasi: a WASI preview 1 command. It prints its arguments and its
//! environment, then the file named by `HELLO_FILE` (default
//! `/data/hello.txt`, a mounted volume), and exits with the code given by
//! `HELLO_EXIT` (default 0).

use std::io::Write;

fn main() {
    let mut out = std::io::stdout().lock();
    let args: Vec<String> = std::env::args().collect();
    writeln!(out, "hello from wasi p1").unwrap();
    writeln!(out, "args: {}", args.join(" ")).unwrap();
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    for (key, value) in &env {
        writeln!(out, "env: {key}={value}").unwrap();
    }
    let path = std::env::var("HELLO_FILE").unwrap_or_else(|_| "/data/hello.txt".to_string());
    match std::fs::read_to_string(&path) {
        Ok(text) => write!(out, "file {path}: {text}").unwrap(),
        Err(e) => eprintln!("cannot read {path}: {e}"),
    }
    if let Ok(dir) = std::env::var("HELLO_WRITE_DIR") {
        let target = format!("{dir}/written-by-guest.txt");
        match std::fs::write(&target, "written by hello-wasi\n") {
            Ok(()) => writeln!(out, "wrote {target}").unwrap(),
            Err(e) => eprintln!("cannot write {target}: {e}"),
        }
    }
    out.flush().unwrap();
    let code: i32 = std::env::var("HELLO_EXIT").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    std::process::exit(code);
}
