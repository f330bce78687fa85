//! hello-wasi: a WASI preview 1 command. It prints its arguments and its
//! environment, then the file named by `HELLO_FILE` (default
//! `/data/hello.txt`, a mounted volume), and exits with the code given by
//! `HELLO_EXIT` (default 0). With `HELLO_REPEAT_MS` set it keeps running
//! instead, reading the file again at that interval and printing it each
//! time it changed (to watch a ConfigMap volume follow its ConfigMap).

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
    let mut shown = match std::fs::read_to_string(&path) {
        Ok(text) => {
            write!(out, "file {path}: {text}").unwrap();
            Some(text)
        }
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            None
        }
    };
    if let Ok(dir) = std::env::var("HELLO_WRITE_DIR") {
        let target = format!("{dir}/written-by-guest.txt");
        match std::fs::write(&target, "written by hello-wasi\n") {
            Ok(()) => writeln!(out, "wrote {target}").unwrap(),
            Err(e) => eprintln!("cannot write {target}: {e}"),
        }
    }
    out.flush().unwrap();
    if let Some(ms) = std::env::var("HELLO_REPEAT_MS").ok().and_then(|m| m.parse().ok()) {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let now = std::fs::read_to_string(&path).ok();
            if now != shown {
                match &now {
                    Some(text) => write!(out, "file {path}: {text}").unwrap(),
                    None => writeln!(out, "file {path} is gone").unwrap(),
                }
                out.flush().unwrap();
                shown = now;
            }
        }
    }
    let code: i32 = std::env::var("HELLO_EXIT").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
    std::process::exit(code);
}
