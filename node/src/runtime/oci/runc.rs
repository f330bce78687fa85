//! Driving an OCI runtime binary (`runc`, `crun`): create, start, state, kill, delete, exec, list.
//!
//! Every call passes `--root` (the runtime's state directory for this agent, so a restarted
//! agent finds its own containers and nobody else's) and `--log` (where the runtime writes its
//! errors, read back to give failures a clear message). Both runtimes share this command line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How long a lifecycle call (create, start, kill, delete, state) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `exec -t` waits for the client's terminal size before starting the command.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(200);
/// The terminal size (columns, rows) of an `exec -t` whose client sent none.
const DEFAULT_TERMINAL_SIZE: (u16, u16) = (80, 24);

/// One OCI runtime binary with its state root.
#[derive(Clone, Debug)]
pub struct RuntimeBinary {
    /// The program (`runc`, `crun`, or a path).
    pub program: PathBuf,
    /// The `--root` state directory.
    pub root: PathBuf,
}

/// The parts of `runc state` the agent uses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct State {
    /// The container id.
    pub id: String,
    /// The init process (0 once stopped).
    #[serde(default)]
    pub pid: i32,
    /// `creating`, `created`, `running`, `paused` or `stopped`.
    pub status: String,
    /// The bundle directory.
    #[serde(default)]
    pub bundle: String,
}

/// A container process's standard streams, as the runtime passes them on (without a
/// terminal, the process gets the runtime's own).
#[derive(Debug)]
pub struct ProcessIo {
    /// Its stdin; `None`: empty (`/dev/null`).
    pub stdin: Option<std::os::fd::OwnedFd>,
    /// Its stdout (the runtime's own errors too).
    pub stdout: std::fs::File,
    /// Its stderr.
    pub stderr: std::fs::File,
    /// With a terminal (`process.terminal`): where the runtime sends its end of it.
    pub console_socket: Option<PathBuf>,
}

/// The outcome of an exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit code (the runtime's own, 255, when it could not start it).
    pub code: i32,
    /// Its stdout and stderr, and the runtime's error when it could not start it.
    pub output: String,
}

impl RuntimeBinary {
    fn command(&self, log: Option<&Path>) -> Command {
        let mut c = Command::new(&self.program);
        c.arg("--root").arg(&self.root);
        if let Some(log) = log {
            c.arg("--log").arg(log).args(["--log-format", "json"]);
        }
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    async fn run(&self, mut c: Command, what: &str, log: Option<&Path>) -> Result<String, String> {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = match tokio::time::timeout(CALL_TIMEOUT, c.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(format!("cannot run {}: {e}", self.program.display())),
            Err(_) => return Err(format!("{what} timed out after {CALL_TIMEOUT:?}")),
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let logged = log.and_then(last_error).unwrap_or_default();
        let detail = if !logged.is_empty() { logged } else { stderr };
        Err(format!("{what}: {detail}"))
    }

    /// `create`: sets the container up from `bundle`, its process waiting to be started, with
    /// the standard streams `io`. Returns the init pid.
    pub async fn create(&self, id: &str, bundle: &Path, io: ProcessIo) -> Result<i32, String> {
        self.create_with(&["create"], id, bundle, io).await
    }

    /// `run --detach`: `create` and `start` in one runtime invocation (one process start
    /// fewer on the pod's path to Running). Returns the init pid.
    pub async fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        io: ProcessIo,
    ) -> Result<i32, String> {
        self.create_with(&["run", "--detach"], id, bundle, io).await
    }

    async fn create_with(
        &self,
        verb: &[&str],
        id: &str,
        bundle: &Path,
        io: ProcessIo,
    ) -> Result<i32, String> {
        let log = bundle.join("runtime.log");
        let pid_file = bundle.join("init.pid");
        let mut c = self.command(Some(&log));
        c.args(verb)
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        if let Some(socket) = &io.console_socket {
            c.arg("--console-socket").arg(socket);
        }
        c.arg(id).stdout(io.stdout).stderr(io.stderr);
        if let Some(stdin) = io.stdin {
            c.stdin(stdin);
        }
        let status = match tokio::time::timeout(CALL_TIMEOUT, c.status()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("cannot run {}: {e}", self.program.display())),
            Err(_) => return Err(format!("create timed out after {CALL_TIMEOUT:?}")),
        };
        if !status.success() {
            let detail = last_error(&log).unwrap_or_else(|| format!("exited with {status}"));
            return Err(detail);
        }
        let pid = tokio::fs::read_to_string(&pid_file)
            .await
            .map_err(|e| format!("cannot read {}: {e}", pid_file.display()))?;
        pid.trim()
            .parse()
            .map_err(|_| format!("bad pid file {}", pid_file.display()))
    }

    /// `start`: runs the created container's process.
    pub async fn start(&self, id: &str, bundle: &Path) -> Result<(), String> {
        let log = bundle.join("runtime.log");
        let mut c = self.command(Some(&log));
        c.arg("start").arg(id);
        self.run(c, "start", Some(&log)).await.map(drop)
    }

    /// `state`: `None` when the runtime knows no such container.
    pub async fn state(&self, id: &str) -> Result<Option<State>, String> {
        let mut c = self.command(None);
        c.arg("state").arg(id);
        match self.run(c, "state", None).await {
            Ok(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| format!("state: unreadable answer: {e}")),
            Err(e) if e.contains("does not exist") || e.contains("not found") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `list`: every container under this root.
    pub async fn list(&self) -> Result<Vec<State>, String> {
        let mut c = self.command(None);
        c.args(["list", "--format", "json"]);
        let json = self.run(c, "list", None).await?;
        let json = json.trim();
        if json.is_empty() || json == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(json).map_err(|e| format!("list: unreadable answer: {e}"))
    }

    /// `kill`: sends `signal` (`TERM`, `KILL`) to the container's init process.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), String> {
        let mut c = self.command(None);
        c.arg("kill").arg(id).arg(signal);
        self.run(c, "kill", None).await.map(drop)
    }

    /// `delete --force`: removes the container (killing it if it still runs) and its cgroup.
    pub async fn delete(&self, id: &str) -> Result<(), String> {
        let mut c = self.command(None);
        c.args(["delete", "--force"]).arg(id);
        match self.run(c, "delete", None).await {
            Err(e) if e.contains("does not exist") || e.contains("not found") => Ok(()),
            other => other.map(drop),
        }
    }

    /// `exec`: runs `command` inside the running container, with a time limit.
    pub async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, String> {
        let mut c = self.command(None);
        c.arg("exec").arg(id).args(command);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let out = match tokio::time::timeout(timeout, c.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(format!("cannot run {}: {e}", self.program.display())),
            Err(_) => return Err(format!("command timed out after {timeout:?}")),
        };
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok(ExecOutput {
            code: out.status.code().unwrap_or(255),
            output: output.trim().to_string(),
        })
    }

    /// `exec` for `kubectl exec`: runs `command` inside the running container, its stdin fed
    /// from `input` (if any; closed when `input` ends), sending its stdout and stderr on
    /// `output` as they come (tagged with their channel); returns its exit code. Kills the
    /// command if `output` closes first.
    pub async fn exec_streaming(
        &self,
        id: &str,
        command: &[String],
        input: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
        output: tokio::sync::mpsc::Sender<(u8, bytes::Bytes)>,
    ) -> Result<i32, String> {
        use tokio::io::AsyncWriteExt;
        let mut c = self.command(None);
        c.arg("exec").arg(id).args(command);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        if let (Some(mut input), Some(mut stdin)) = (input, child.stdin.take()) {
            tokio::spawn(async move {
                while let Some(chunk) = input.recv().await {
                    if stdin.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                // Dropping it closes the command's stdin.
                let _ = stdin.shutdown().await;
            });
        }
        let out = tokio::spawn(pump(
            child.stdout.take(),
            crate::runtime::EXEC_STDOUT,
            output.clone(),
        ));
        let err = tokio::spawn(pump(
            child.stderr.take(),
            crate::runtime::EXEC_STDERR,
            output.clone(),
        ));
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| format!("exec failed: {e}"))?,
            () = output.closed() => {
                let _ = child.kill().await;
                out.abort();
                err.abort();
                return Err("the client went away".into());
            }
        };
        let _ = out.await;
        let _ = err.await;
        Ok(status.code().unwrap_or(255))
    }

    /// `exec --tty` for `kubectl exec -t`: runs `command` inside the running container on a
    /// terminal ([`super::terminal`]). What comes on `input` is typed into it; what it shows
    /// is sent on `output` as stdout; each `(width, height)` on `resize` sets its size.
    /// Returns the command's exit code; kills it if `output` closes first.
    pub async fn exec_terminal(
        &self,
        id: &str,
        command: &[String],
        input: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
        mut resize: tokio::sync::mpsc::Receiver<(u16, u16)>,
        output: tokio::sync::mpsc::Sender<(u8, bytes::Bytes)>,
    ) -> Result<i32, String> {
        let failed = |e: std::io::Error| format!("cannot open a terminal: {e}");
        let pty = super::terminal::open().map_err(failed)?;
        // kubectl sends the size of its terminal as soon as it is connected: start the command
        // on a terminal of that size when it comes in time (a full-screen program draws for
        // the size it starts with), else on a default one, resized when the size comes.
        let size = tokio::time::timeout(FIRST_SIZE_WAIT, resize.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or(DEFAULT_TERMINAL_SIZE);
        super::terminal::resize(&pty.master, size.0, size.1).map_err(failed)?;
        let mut c = self.command(None);
        c.arg("exec").arg("--tty").arg(id).args(command);
        c.stdin(Stdio::from(pty.slave.try_clone().map_err(failed)?))
            .stdout(Stdio::from(pty.slave.try_clone().map_err(failed)?))
            .stderr(Stdio::from(pty.slave));
        let spawned = c.spawn();
        // The runtime holds the only copies of its end now: the output ends when it exits.
        drop(c);
        let mut child =
            spawned.map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let reader = {
            let master = pty.master.try_clone().map_err(failed)?;
            let output = output.clone();
            tokio::task::spawn_blocking(move || {
                super::terminal::copy_out(master, crate::runtime::EXEC_STDOUT, output)
            })
        };
        if let Some(input) = input {
            let master = pty.master.try_clone().map_err(failed)?;
            // A thread of its own: it may wait on `input` for as long as the command runs.
            std::thread::spawn(move || super::terminal::copy_in(master, input));
        }
        let pid = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32));
        let master = pty.master;
        let resizer = tokio::spawn(async move {
            while let Some((width, height)) = resize.recv().await {
                if super::terminal::resize(&master, width, height).is_ok()
                    && let Some(pid) = pid
                {
                    // The runtime sizes the container's terminal after its own on SIGWINCH.
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::WINCH);
                }
            }
        });
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| format!("exec failed: {e}")),
            () = output.closed() => {
                let _ = child.kill().await;
                Err("the client went away".to_string())
            }
        };
        resizer.abort();
        // What the command showed last is still in the terminal: read it to the end.
        let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        Ok(status?.code().unwrap_or(255))
    }
}

/// Sends what `reader` yields on `output`, tagged with `channel`, until it ends or `output`
/// closes.
async fn pump(
    reader: Option<impl tokio::io::AsyncRead + Unpin>,
    channel: u8,
    output: tokio::sync::mpsc::Sender<(u8, bytes::Bytes)>,
) {
    use tokio::io::AsyncReadExt;
    let Some(mut reader) = reader else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
                if output.send((channel, chunk)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The last error the runtime wrote to its JSON log (`{"level":"error","msg":...}`).
pub fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(|s| s.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_logged_error_explains_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runtime.log");
        std::fs::write(
            &log,
            "{\"level\":\"info\",\"msg\":\"hello\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"/nope\\\": no such file or directory\\n\"}\nnot json\n",
        )
        .unwrap();
        assert_eq!(
            last_error(&log).as_deref(),
            Some("exec: \"/nope\": no such file or directory")
        );
        assert_eq!(last_error(&dir.path().join("missing")), None);
    }
}
