//! `kubectl exec -t` for OCI runtimes: the runtime binary (`runc exec --tty`) runs attached to
//! a pseudo-terminal the agent opens, as it would for a user at a real terminal: it puts its
//! end in raw mode, gives the command a terminal of the container's own, and copies between
//! the two, resizing the container's terminal to its own on `SIGWINCH`. The agent holds the
//! other end: what it reads there is the command's output (stdout and stderr merged, as on
//! any terminal), what it writes is the command's input, and a resize from kubectl sets the
//! terminal's size and sends the runtime `SIGWINCH`.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

/// A pseudo-terminal pair: the agent's end and the runtime's.
#[derive(Debug)]
pub struct Pty {
    /// The agent's end (`/dev/ptmx`).
    pub master: OwnedFd,
    /// The runtime's end: its stdin, stdout and stderr.
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal.
pub fn open() -> std::io::Result<Pty> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY;
    let master = rustix::pty::openpt(flags)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let slave = rustix::pty::ioctl_tiocgptpeer(&master, flags)?;
    Ok(Pty { master, slave })
}

/// Sets the terminal's size (`width` columns, `height` rows).
pub fn resize(master: &OwnedFd, width: u16, height: u16) -> std::io::Result<()> {
    rustix::termios::tcsetwinsize(
        master,
        Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?;
    Ok(())
}

/// Copies what the terminal shows to `output` (on `channel`) until it closes (every holder of
/// the other end is gone) or `output` does. Blocking: run it on a thread of its own.
pub fn copy_out(
    master: OwnedFd,
    channel: u8,
    output: tokio::sync::mpsc::Sender<(u8, bytes::Bytes)>,
) {
    let mut file = std::fs::File::from(master);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match file.read(&mut buf) {
            // EIO once the other end is closed: the end of the output.
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
                if output.blocking_send((channel, chunk)).is_err() {
                    return;
                }
            }
        }
    }
}

/// Types what comes on `input` into the terminal until `input` ends. Blocking: run it on a
/// thread of its own.
pub fn copy_in(master: OwnedFd, mut input: tokio::sync::mpsc::Receiver<bytes::Bytes>) {
    let mut file = std::fs::File::from(master);
    while let Some(chunk) = input.blocking_recv() {
        if file.write_all(&chunk).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_typed_comes_back_and_the_size_is_kept() {
        let pty = open().unwrap();
        resize(&pty.master, 120, 40).unwrap();
        let size = rustix::termios::tcgetwinsize(&pty.slave).unwrap();
        assert_eq!((size.ws_col, size.ws_row), (120, 40));
        // A fresh terminal echoes: what is typed on the agent's end shows on it again.
        let (in_tx, in_rx) = tokio::sync::mpsc::channel(4);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(4);
        let reader = std::thread::spawn({
            let master = pty.master.try_clone().unwrap();
            move || copy_out(master, 1, out_tx)
        });
        let writer = std::thread::spawn({
            let master = pty.master.try_clone().unwrap();
            move || copy_in(master, in_rx)
        });
        in_tx
            .blocking_send(bytes::Bytes::from_static(b"hi\n"))
            .unwrap();
        let mut seen = Vec::new();
        while !seen.ends_with(b"\r\n") {
            let (channel, chunk) = out_rx.blocking_recv().expect("echo");
            assert_eq!(channel, 1);
            seen.extend_from_slice(&chunk);
        }
        assert_eq!(seen, b"hi\r\n");
        drop(in_tx);
        writer.join().unwrap();
        // Closing the other end ends the output.
        drop(pty.slave);
        reader.join().unwrap();
    }
}
