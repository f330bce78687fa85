//! Starts real `flotilla` processes on free ports and drives them with the installed kubectl.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `flotilla` binary built for this test run.
///
/// `FLOTILLA_BIN` overrides it (to run the suite as another user from a copy of the binaries).
pub fn flotilla_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("FLOTILLA_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_flotilla").to_string())
    })
}

/// A control plane started as a child process, killed when dropped.
pub struct Server {
    child: Option<Child>,
    /// Its data directory (kept across restarts).
    #[allow(dead_code, reason = "for tests that restart a server in place")]
    pub dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts `flotilla server` on a free port in a fresh data directory.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Server::start_in(tmp.path(), &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Starts `flotilla server` in `dir` with extra flags, waiting (at most 30 s) until it
    /// prints its address.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        let kubeconfig = dir.join("kubeconfig");
        let mut child = Command::new(flotilla_bin())
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn flotilla server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("flotilla server did not start within 30s");
        Server {
            child: Some(child),
            dir: dir.to_path_buf(),
            url,
            kubeconfig,
            _tmp: None,
        }
    }

    /// A handle on a server started elsewhere in `dir` (its kubeconfig) at `url`; dropping
    /// it kills nothing.
    pub fn attach(dir: &Path, url: &str) -> Server {
        Server {
            child: None,
            dir: dir.to_path_buf(),
            url: url.to_string(),
            kubeconfig: dir.join("kubeconfig"),
            _tmp: None,
        }
    }

    /// Kills the process with SIGKILL (no shutdown at all) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (at most 10 s) for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        false
    }

    /// Runs kubectl against this server (60 s limit).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl_with(&self.kubeconfig, args, None)
    }

    /// Runs kubectl with stdin.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        kubectl_with(&self.kubeconfig, args, Some(stdin))
    }

    /// Runs kubectl and returns stdout, panicking with stderr if it failed.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        Self::stdout_of_success(args, self.kubectl(args))
    }

    /// Runs kubectl with stdin and returns stdout, panicking with stderr if it failed.
    pub fn kubectl_stdin_ok(&self, args: &[&str], stdin: &str) -> String {
        Self::stdout_of_success(args, self.kubectl_stdin(args, stdin))
    }

    fn stdout_of_success(args: &[&str], out: Output) -> String {
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl -o json and parses the output.
    pub fn kubectl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).expect("kubectl printed JSON")
    }

    /// A kube client for this server.
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(config).expect("client")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs kubectl against `kubeconfig` with `stdin` piped in; killed after 60 s.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("KUBECTL_NO_COLOR", "1")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let out = child.wait_with_output().expect("kubectl output");
    let _ = tx.send(());
    out
}

/// A loopback /24 of its own for one cluster's pods or Services (`127.X.Y.0/24`): the tests
/// run side by side in one process (and CI beside other checkouts), and two clusters handing
/// out the same address would clash on its ports. Every call gives another range.
pub fn loopback_range() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("127.{}.{}.0/24", 100 + n % 150, std::process::id() % 250)
}

/// Polls `f` every 50 ms until it returns `Some`, panicking after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The manifests shipped with the tests.
pub fn manifests(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/manifests")
        .join(name)
}

/// A file of the repository's `samples/` directory.
pub fn sample(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(path)
}

/// Pushes a `.wasm` file to the registry at `registry` (a cluster's API server) as `reference`.
pub fn push_wasm(registry: &str, wasm: &Path, reference: &str) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let options = flotilla_node::image::push::PushOptions {
        default_registry: Some(registry.to_string()),
        ..Default::default()
    };
    rt.block_on(flotilla_node::image::push::push_wasm(
        wasm,
        reference,
        &options,
        &flotilla_node::image::push::NoProgress,
    ))
    .unwrap_or_else(|e| panic!("push {}: {e}", wasm.display()));
}

/// Runs `kubectl ARGS` on a terminal of 30 rows and 100 columns (util-linux's `script` gives
/// it one), typing `input`: its exit code (`None` past a minute, `timeout`'s limit) and what
/// the terminal showed.
pub fn kubectl_on_terminal(kubeconfig: &Path, args: &str, input: &str) -> (Option<i32>, String) {
    kubectl_typing(kubeconfig, args, None, input)
}

/// As [`kubectl_on_terminal`], typing `input` only once kubectl has attached ("If you don't
/// see a command prompt" shown, and a second more for it to put its terminal in raw mode):
/// control characters typed earlier are taken by the terminal's own line editing.
pub fn kubectl_on_terminal_attached(
    kubeconfig: &Path,
    args: &str,
    input: &str,
) -> (Option<i32>, String) {
    kubectl_typing(
        kubeconfig,
        args,
        Some("If you don't see a command prompt"),
        input,
    )
}

fn kubectl_typing(
    kubeconfig: &Path,
    args: &str,
    after: Option<&str>,
    input: &str,
) -> (Option<i32>, String) {
    let line = format!("stty rows 30 cols 100; exec kubectl {args}");
    let mut child = Command::new("timeout")
        .args(["60", "script", "-qec", &line, "/dev/null"])
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs kubectl on a terminal");
    let mut keyboard = child.stdin.take().expect("stdin");
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let (mut stdout, shown) = (child.stdout.take().expect("stdout"), shown.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    if let Some(marker) = after {
        let seen = wait_for_opt(Duration::from_secs(60), || {
            String::from_utf8_lossy(&shown.lock().unwrap())
                .contains(marker)
                .then_some(())
        });
        if seen.is_some() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    keyboard
        .write_all(input.as_bytes())
        .expect("type the input");
    // The keyboard stays there until kubectl is done, as at a real terminal: an end of input
    // would make `script` type an end-of-file character of its own into the session.
    let out = child.wait_with_output().expect("script ends");
    drop(keyboard);
    reader.join().expect("the reader ends with the output");
    let mut shown = String::from_utf8_lossy(&shown.lock().unwrap()).into_owned();
    shown.push_str(&String::from_utf8_lossy(&out.stderr));
    let code = out.status.code().filter(|c| *c != 124);
    (code, shown)
}

/// Polls `f` every 50 ms until it gives a value, for at most `timeout`.
pub fn wait_for_opt<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
