//! A container's own standard input and terminal (a container's `stdin` and `tty`), which
//! `kubectl attach` connects to (`kubectl run -it`).
//!
//! - With `tty`, the runtime gives the container a pseudo-terminal and hands the agent its
//!   other end over the `--console-socket` unix socket ([`ConsoleSocket`]). The agent reads
//!   the container's output there (stdout and stderr merged, as on any terminal), writes what
//!   is typed, and sets the terminal's size (the kernel tells the container's foreground
//!   programs with `SIGWINCH`).
//! - With `stdin` alone, the container's stdin is a pipe whose writing end the agent keeps
//!   ([`ContainerStdin::pipe`]): it stays open between attaches, so a program reading it waits
//!   for the next one, and it is closed after the first attach when the container has
//!   `stdinOnce` (the program reads its end of file).
//!
//! The agent holds these ends, as containerd's shim does: a container an agent adopted
//! after a restart has neither any more (its stdin has ended).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc::Receiver;

use crate::runtime::{ContainerOutput, OutputStream};

/// The socket the runtime sends a container's terminal over (`--console-socket`).
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Listens at a fresh path in the temporary directory: a unix socket's path has at most
    /// 107 bytes, which a container's own directory may not leave room for.
    pub fn bind_new() -> std::io::Result<ConsoleSocket> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("flotilla-console-{}-{n}.sock", std::process::id());
        ConsoleSocket::bind(&std::env::temp_dir().join(name))
    }

    /// Listens at `path` (a stale socket file there is replaced).
    pub fn bind(path: &Path) -> std::io::Result<ConsoleSocket> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The terminal the runtime sent while it created the container (call once it returned):
    /// its connection is already queued, with the terminal's end as `SCM_RIGHTS`.
    pub fn receive(&self) -> std::io::Result<OwnedFd> {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        let (stream, _) = self.listener.accept().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("the runtime sent no terminal on its console socket: {e}"),
            )
        })?;
        stream.set_nonblocking(false)?;
        let mut name = [0u8; 4096];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        rustix::net::recvmsg(
            stream.as_fd(),
            &mut [std::io::IoSliceMut::new(&mut name)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = message
                && let Some(fd) = fds.next()
            {
                return Ok(fd);
            }
        }
        Err(std::io::Error::other(
            "the runtime's console socket message held no terminal",
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The agent's end of a container's standard input: a pipe's writing end, or its terminal.
#[derive(Debug)]
pub struct ContainerStdin {
    /// Where input goes; `None` once closed (`stdinOnce`).
    writer: Mutex<Option<std::fs::File>>,
    /// The terminal, for its size; `None` for a pipe.
    terminal: Option<OwnedFd>,
    /// `stdinOnce`.
    once: bool,
}

impl ContainerStdin {
    /// A pipe for a container with `stdin` and no terminal: the agent's side and the end the
    /// container reads (its fd 0).
    pub fn pipe(once: bool) -> std::io::Result<(ContainerStdin, OwnedFd)> {
        let (read, write) = std::io::pipe()?;
        let stdin = ContainerStdin {
            writer: Mutex::new(Some(std::fs::File::from(OwnedFd::from(write)))),
            terminal: None,
            once,
        };
        Ok((stdin, OwnedFd::from(read)))
    }

    /// The container's terminal (`master`, which the runtime sent), written to when `stdin` is
    /// set; its input is dropped otherwise.
    pub fn terminal(master: &OwnedFd, stdin: bool, once: bool) -> std::io::Result<ContainerStdin> {
        let writer = if stdin {
            Some(std::fs::File::from(master.try_clone()?))
        } else {
            None
        };
        Ok(ContainerStdin {
            writer: Mutex::new(writer),
            terminal: Some(master.try_clone()?),
            once,
        })
    }

    /// Serves one attach: writes what comes on `input` and applies each size on `resize`,
    /// until both end. With `stdinOnce`, a pipe is closed once `input` ends: the container
    /// reads its end of file. A terminal stays open (as containerd's shim keeps it): its
    /// programs end by themselves.
    pub async fn attach(
        self: Arc<Self>,
        input: Option<Receiver<Bytes>>,
        mut resize: Receiver<(u16, u16)>,
    ) {
        let writer = lock(&self.writer).as_ref().and_then(|w| w.try_clone().ok());
        let copy = async {
            let Some(mut input) = input else {
                return;
            };
            let Some(writer) = writer else {
                // Closed, or no stdin asked for: what comes is dropped.
                while input.recv().await.is_some() {}
                return;
            };
            // A thread of its own, not the runtime's blocking pool: a write blocks for as long
            // as the container does not read, and the runtime's shutdown waits for its
            // blocking tasks (an agent exits leaving its containers running).
            let _ = on_thread(move || copy_in(writer, input)).await;
            // As containerd's attach: the first attach with input closes a plain stdin once
            // that input ends; both writing ends are gone then, so the container reads its
            // end of file.
            if self.once && self.terminal.is_none() {
                lock(&self.writer).take();
            }
        };
        let sizes = async {
            while let Some((width, height)) = resize.recv().await {
                if let Some(terminal) = &self.terminal {
                    let _ = super::terminal::resize(terminal, width, height);
                }
            }
        };
        futures::join!(copy, sizes);
    }
}

/// Runs `work` on a thread of its own; the answer resolves when it is done (never, if the
/// process exits first).
pub fn on_thread(work: impl FnOnce() + Send + 'static) -> tokio::sync::oneshot::Receiver<()> {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        work();
        let _ = done.send(());
    });
    finished
}

/// Writes what comes on `input` to `writer` until either ends.
fn copy_in(mut writer: std::fs::File, mut input: Receiver<Bytes>) {
    while let Some(chunk) = input.blocking_recv() {
        if writer.write_all(&chunk).is_err() {
            return;
        }
    }
}

/// Copies what the container's terminal shows into its log as stdout, until the terminal
/// closes (every program of the container holding it has ended). Blocking: a thread's work.
pub fn copy_out(master: OwnedFd, output: Arc<dyn ContainerOutput>) {
    let mut file = std::fs::File::from(master);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match file.read(&mut buf) {
            // EIO once the container's side is closed: the end of its output.
            Ok(0) | Err(_) => return,
            Ok(n) => output.write(OutputStream::Stdout, &buf[..n]),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pipe_stays_open_between_attaches_unless_stdin_once() {
        for once in [false, true] {
            let (stdin, read) = ContainerStdin::pipe(once).unwrap();
            let stdin = Arc::new(stdin);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            // The terminal-size channel stays open as long as the client is attached.
            let (size_tx, size_rx) = tokio::sync::mpsc::channel(1);
            let attached = tokio::spawn(stdin.clone().attach(Some(rx), size_rx));
            tx.send(Bytes::from_static(b"one\n")).await.unwrap();
            drop(tx);
            let read = tokio::task::spawn_blocking(move || {
                let mut reader = std::fs::File::from(read);
                let mut got = [0u8; 4];
                reader.read_exact(&mut got).unwrap();
                assert_eq!(&got, b"one\n");
                if once {
                    // The end of file comes when the input ends, the client still attached.
                    let mut rest = Vec::new();
                    reader.read_to_end(&mut rest).unwrap();
                    assert!(rest.is_empty());
                }
            });
            tokio::time::timeout(std::time::Duration::from_secs(10), read)
                .await
                .expect("the container's side reads in time")
                .unwrap();
            drop(size_tx);
            attached.await.unwrap();
            // The agent still holds the writing end, unless `stdinOnce` closed it.
            assert_eq!(lock(&stdin.writer).is_some(), !once);
        }
    }

    #[test]
    fn the_terminal_comes_over_the_console_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = ConsoleSocket::bind(&dir.path().join("console.sock")).unwrap();
        // What runc does: connect and send the terminal's end with its name.
        let pty = super::super::terminal::open().unwrap();
        let client = std::os::unix::net::UnixStream::connect(socket.path()).unwrap();
        let fds = [pty.master.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut ancillary = rustix::net::SendAncillaryBuffer::new(&mut space);
        assert!(ancillary.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
        rustix::net::sendmsg(
            client.as_fd(),
            &[std::io::IoSlice::new(b"/dev/pts/9")],
            &mut ancillary,
            rustix::net::SendFlags::empty(),
        )
        .unwrap();
        let master = socket.receive().unwrap();
        super::super::terminal::resize(&master, 90, 20).unwrap();
        let size = rustix::termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (90, 20));
        // Nothing more was sent: a second receive says so instead of waiting.
        let err = socket.receive().unwrap_err();
        assert!(err.to_string().contains("no terminal"), "{err}");
        let path = socket.path().to_path_buf();
        drop(socket);
        assert!(!path.exists());
    }
}
