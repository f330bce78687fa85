//! Where a guest's stdout and stderr go: a [`LogSink`] the caller provides, and
//! [`BoundedLog`], a ready-made sink that keeps the most recent bytes.
//!
//! Writes never block the guest: a sink takes the bytes or drops them. That is
//! the point of a bounded sink — a guest printing in a loop must not grow the
//! node agent's memory without limit.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Which stream a chunk of guest output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// The guest's standard output.
    Stdout,
    /// The guest's standard error.
    Stderr,
}

/// Receives a guest's output. Implementations must be quick and must not block:
/// they run on the guest's own task.
pub trait LogSink: Send + Sync + 'static {
    /// Takes one chunk the guest wrote (not necessarily a whole line).
    fn write(&self, stream: LogStream, bytes: &[u8]);
}

/// A sink that keeps the most recent `capacity` bytes of output, both streams
/// interleaved in order, and counts what it had to drop.
#[derive(Debug)]
pub struct BoundedLog {
    capacity: usize,
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    chunks: VecDeque<(LogStream, Bytes)>,
    len: usize,
    dropped: u64,
}

impl BoundedLog {
    /// A log keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Arc<BoundedLog> {
        Arc::new(BoundedLog {
            capacity,
            inner: Mutex::new(Ring::default()),
        })
    }

    /// Everything retained, in order, with the stream of each chunk.
    pub fn chunks(&self) -> Vec<(LogStream, Bytes)> {
        self.lock().chunks.iter().cloned().collect()
    }

    /// The retained bytes of one stream, concatenated.
    pub fn contents(&self, stream: LogStream) -> Vec<u8> {
        let ring = self.lock();
        let mut out = Vec::new();
        for (s, chunk) in &ring.chunks {
            if *s == stream {
                out.extend_from_slice(chunk);
            }
        }
        out
    }

    /// The retained standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.contents(LogStream::Stdout)).into_owned()
    }

    /// The retained standard error as text (lossy).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.contents(LogStream::Stderr)).into_owned()
    }

    /// How many bytes were dropped to stay within capacity.
    pub fn dropped_bytes(&self) -> u64 {
        self.lock().dropped
    }

    /// How many bytes are retained.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding this lock cannot leave the ring inconsistent
        // in a way that matters for logs, so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LogSink for BoundedLog {
    fn write(&self, stream: LogStream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut ring = self.lock();
        // Keep only the tail of an oversized chunk.
        let bytes = if bytes.len() > self.capacity {
            ring.dropped += (bytes.len() - self.capacity) as u64;
            &bytes[bytes.len() - self.capacity..]
        } else {
            bytes
        };
        while ring.len + bytes.len() > self.capacity {
            let Some((s, front)) = ring.chunks.pop_front() else {
                break;
            };
            let excess = ring.len + bytes.len() - self.capacity;
            if front.len() > excess {
                // Trim the oldest chunk instead of dropping all of it.
                ring.chunks.push_front((s, front.slice(excess..)));
                ring.len -= excess;
                ring.dropped += excess as u64;
            } else {
                ring.len -= front.len();
                ring.dropped += front.len() as u64;
            }
        }
        ring.len += bytes.len();
        ring.chunks
            .push_back((stream, Bytes::copy_from_slice(bytes)));
    }
}

/// A sink that discards everything (the default when the caller gives none).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullLog;

impl LogSink for NullLog {
    fn write(&self, _stream: LogStream, _bytes: &[u8]) {}
}

/// Adapts a [`LogSink`] to wasmtime-wasi's stdout/stderr stream.
#[derive(Clone)]
pub(crate) struct SinkStream {
    sink: Arc<dyn LogSink>,
    stream: LogStream,
}

impl SinkStream {
    pub(crate) fn new(sink: Arc<dyn LogSink>, stream: LogStream) -> SinkStream {
        SinkStream { sink, stream }
    }
}

impl IsTerminal for SinkStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SinkStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for SinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sink.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recent_bytes_within_capacity() {
        let log = BoundedLog::new(8);
        log.write(LogStream::Stdout, b"hello ");
        log.write(LogStream::Stderr, b"world");
        assert_eq!(log.len(), 8);
        assert_eq!(log.dropped_bytes(), 3);
        assert_eq!(log.stdout_text(), "lo ");
        assert_eq!(log.stderr_text(), "world");
    }

    #[test]
    fn an_oversized_chunk_keeps_its_tail() {
        let log = BoundedLog::new(4);
        log.write(LogStream::Stdout, b"0123456789");
        assert_eq!(log.stdout_text(), "6789");
        assert_eq!(log.dropped_bytes(), 6);
    }
}
