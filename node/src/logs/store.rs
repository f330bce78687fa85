//! Where container logs live: `{root}/{namespace}_{pod}_{uid}/{container}/{run}.log`, one file
//! per run of a container (so `--previous` reads the run before the current one), rotated to
//! `{run}.log.1` when it outgrows its size cap (one rotated file is kept: a chatty container's
//! disk use is bounded by twice the cap per run, and only two runs are kept).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::Stream;
use tokio::sync::{mpsc, watch};

use super::cri::{self, LogOptions};
use crate::runtime::{ContainerOutput, OutputStream};

/// Default size of one log file before it is rotated.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 << 20;
/// Longest partial line kept in memory before it is written as a partial (`P`) line.
const MAX_PARTIAL: usize = 16 << 10;
/// How many chunks of output an attached client may be behind ([`ContainerLog::tap`]).
pub const TAP_BACKLOG: usize = 256;
/// How often a follower looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Why a log cannot be served; the message is the one `kubectl logs` prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// No such pod or container on this node.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be answered (no previous run, not started yet).
    #[error("{0}")]
    BadRequest(String),
}

/// The node's container logs; a cheap handle.
#[derive(Clone, Debug)]
pub struct LogStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    max_file_bytes: u64,
    // A std mutex: map operations only.
    containers: Mutex<HashMap<(String, String, String), Runs>>,
}

/// The runs of one container that have logs.
#[derive(Debug, Default)]
struct Runs {
    pod_dir: PathBuf,
    current: Option<Arc<ContainerLog>>,
    previous: Option<Arc<ContainerLog>>,
}

impl LogStore {
    /// A store under `root`, rotating files at `max_file_bytes`.
    pub fn new(root: &Path, max_file_bytes: u64) -> LogStore {
        LogStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                max_file_bytes: max_file_bytes.max(1024),
                containers: Mutex::default(),
            }),
        }
    }

    /// Opens the log of a new run of a container; the run before it becomes the previous one,
    /// and older runs are deleted.
    pub fn open(
        &self,
        namespace: &str,
        pod: &str,
        uid: &str,
        container: &str,
        run: u32,
    ) -> std::io::Result<Arc<ContainerLog>> {
        let pod_dir = self.inner.root.join(format!("{namespace}_{pod}_{uid}"));
        let log = Arc::new(ContainerLog::new(
            pod_dir.join(container).join(format!("{run}.log")),
            self.inner.max_file_bytes,
        ));
        let mut map = lock(&self.inner.containers);
        let runs = map
            .entry((namespace.into(), pod.into(), container.into()))
            .or_default();
        if runs.pod_dir != pod_dir {
            *runs = Runs {
                pod_dir,
                ..Runs::default()
            };
        }
        let older = std::mem::replace(&mut runs.previous, runs.current.replace(log.clone()));
        if let Some(older) = older {
            older.finish();
            older.delete_files();
        }
        Ok(log)
    }

    /// Serves the logs an earlier agent left for a container of a pod that finished under it:
    /// its last run (and the one before, for `--previous`), both ended. Nothing is registered
    /// when there is no such file.
    pub fn adopt(&self, namespace: &str, pod: &str, uid: &str, container: &str) {
        let pod_dir = self.inner.root.join(format!("{namespace}_{pod}_{uid}"));
        let mut runs: Vec<u32> = std::fs::read_dir(pod_dir.join(container))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        runs.sort_unstable();
        let Some(&last) = runs.last() else {
            return;
        };
        let ended = |run: u32| {
            let log = ContainerLog::new(
                pod_dir.join(container).join(format!("{run}.log")),
                self.inner.max_file_bytes,
            );
            log.finish();
            Arc::new(log)
        };
        let previous = runs.len().checked_sub(2).map(|i| ended(runs[i]));
        lock(&self.inner.containers).insert(
            (namespace.into(), pod.into(), container.into()),
            Runs {
                pod_dir: pod_dir.clone(),
                current: Some(ended(last)),
                previous,
            },
        );
    }

    /// Forgets a pod's logs and deletes their files.
    pub fn remove_pod(&self, namespace: &str, pod: &str, uid: &str) {
        let pod_dir = self.inner.root.join(format!("{namespace}_{pod}_{uid}"));
        lock(&self.inner.containers)
            .retain(|(ns, p, _), runs| !(ns == namespace && p == pod && runs.pod_dir == pod_dir));
        let _ = std::fs::remove_dir_all(&pod_dir);
    }

    /// The log a request means.
    pub fn find(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<Arc<ContainerLog>, LogError> {
        let map = lock(&self.inner.containers);
        let runs = map
            .get(&(namespace.into(), pod.into(), container.into()))
            .ok_or_else(|| {
                LogError::BadRequest(format!(
                    "container \"{container}\" in pod \"{pod}\" is waiting to start: no logs yet"
                ))
            })?;
        let log = if previous {
            runs.previous.clone().ok_or_else(|| {
                LogError::BadRequest(format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                ))
            })?
        } else {
            runs.current.clone().ok_or_else(|| {
                LogError::BadRequest(format!(
                    "container \"{container}\" in pod \"{pod}\" is waiting to start"
                ))
            })?
        };
        Ok(log)
    }
}

/// The log of one container run: written by the runtime, read by log requests.
#[derive(Debug)]
pub struct ContainerLog {
    path: PathBuf,
    max_file_bytes: u64,
    writer: Mutex<Writer>,
    finished: watch::Sender<bool>,
}

#[derive(Debug)]
struct Writer {
    file: LogFile,
    size: u64,
    partial: [Vec<u8>; 2],
    /// Live copies of the output ([`ContainerLog::tap`]).
    taps: Vec<mpsc::Sender<(OutputStream, Bytes)>>,
    /// Whether the run has ended ([`ContainerLog::finish`]).
    ended: bool,
}

/// The current file of a run.
#[derive(Debug)]
enum LogFile {
    /// Nothing written yet.
    NotCreated,
    /// Being written.
    Open(std::fs::File),
    /// The run ended, or the file could not be created.
    Closed,
}

impl ContainerLog {
    /// A log whose directory and file are created by its first line: most service pods never
    /// write one, and creating directories is a large part of a pod's start on ext4.
    fn new(path: PathBuf, max_file_bytes: u64) -> ContainerLog {
        ContainerLog {
            path,
            max_file_bytes,
            writer: Mutex::new(Writer {
                file: LogFile::NotCreated,
                size: 0,
                partial: [Vec::new(), Vec::new()],
                taps: Vec::new(),
                ended: false,
            }),
            finished: watch::channel(false).0,
        }
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".1");
        PathBuf::from(p)
    }

    /// Marks the run as ended: writes any partial line; followers stop after reading the rest.
    pub fn finish(&self) {
        let mut w = lock(&self.writer);
        for (i, stream) in [OutputStream::Stdout, OutputStream::Stderr]
            .iter()
            .enumerate()
        {
            let partial = std::mem::take(&mut w.partial[i]);
            if !partial.is_empty() {
                self.append(&mut w, stream.as_str(), true, &partial);
            }
        }
        w.file = LogFile::Closed;
        // Closing the taps ends the attaches.
        w.taps.clear();
        w.ended = true;
        drop(w);
        self.finished.send_replace(true);
    }

    /// A live copy of what the run writes from now on, chunk by chunk as it comes (a prompt
    /// without its newline shows at once), for `kubectl attach`; it ends with the run. A
    /// reader more than [`TAP_BACKLOG`] chunks behind loses what does not fit.
    pub fn tap(&self) -> mpsc::Receiver<(OutputStream, Bytes)> {
        let (tx, rx) = mpsc::channel(TAP_BACKLOG);
        let mut w = lock(&self.writer);
        if !w.ended {
            w.taps.push(tx);
        }
        rx
    }

    /// Whether the run has ended.
    pub fn is_finished(&self) -> bool {
        *self.finished.borrow()
    }

    fn delete_files(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.rotated());
    }

    fn append(&self, w: &mut Writer, stream: &str, full: bool, text: &[u8]) {
        let line = cri::format_line(Utc::now(), stream, full, text);
        if matches!(w.file, LogFile::NotCreated) {
            let created = self
                .path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::File::create(&self.path));
            w.file = match created {
                Ok(f) => LogFile::Open(f),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot create the container log; its output is lost");
                    LogFile::Closed
                }
            };
        }
        let open = matches!(w.file, LogFile::Open(_));
        if open && w.size > 0 && w.size + line.len() as u64 > self.max_file_bytes {
            // Rotate: the current file becomes `.1` (replacing the older one).
            if std::fs::rename(&self.path, self.rotated()).is_ok()
                && let Ok(f) = std::fs::File::create(&self.path)
            {
                w.file = LogFile::Open(f);
                w.size = 0;
            }
        }
        if let LogFile::Open(f) = &mut w.file
            && f.write_all(&line).is_ok()
        {
            w.size += line.len() as u64;
        }
    }

    /// The log as `kubectl logs` shows it: what is there now and, with `follow`, whatever
    /// comes until the run ends.
    pub fn stream(
        self: Arc<Self>,
        options: LogOptions,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        async_stream(self, options)
    }
}

fn async_stream(
    log: Arc<ContainerLog>,
    options: LogOptions,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let state = FollowState {
        log,
        options,
        offset: None,
        pending: Vec::new(),
        sent: 0,
        done: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.done {
                return None;
            }
            let finished_before = s.log.is_finished();
            let chunk = s.next_chunk();
            if !chunk.is_empty() {
                return Some((Ok(Bytes::from(chunk)), s));
            }
            if !s.options.follow || finished_before || s.limit_reached() {
                return None;
            }
            let mut finished = s.log.finished.subscribe();
            let _ = tokio::time::timeout(FOLLOW_POLL, finished.wait_for(|f| *f)).await;
        }
    })
}

struct FollowState {
    log: Arc<ContainerLog>,
    options: LogOptions,
    /// Where reading the current file continues; `None` before the first read.
    offset: Option<u64>,
    pending: Vec<u8>,
    sent: usize,
    done: bool,
}

impl FollowState {
    fn limit_reached(&self) -> bool {
        self.options.limit_bytes.is_some_and(|l| self.sent >= l)
    }

    /// Output not sent yet.
    fn next_chunk(&mut self) -> Vec<u8> {
        let initial = self.offset.is_none();
        let fresh = if initial {
            let mut all = std::fs::read(self.log.rotated()).unwrap_or_default();
            all.extend(self.read_from(0));
            all
        } else {
            self.read_from(self.offset.unwrap_or(0))
        };
        self.pending.extend(fresh);
        // `tailLines` and `sinceSeconds` choose where to start; later output is all sent, save
        // what is older than a `sinceTime` (which may lie ahead).
        let options = if initial {
            self.options.clone()
        } else {
            LogOptions {
                tail_lines: None,
                since_seconds: None,
                ..self.options.clone()
            }
        };
        let (mut out, consumed) = cri::render(&self.pending, &options, Utc::now());
        self.pending.drain(..consumed);
        if let Some(limit) = self.options.limit_bytes {
            let room = limit.saturating_sub(self.sent);
            if out.len() >= room {
                out.truncate(room);
                self.done = true;
            }
        }
        self.sent += out.len();
        out
    }

    fn read_from(&mut self, offset: u64) -> Vec<u8> {
        let Ok(mut f) = std::fs::File::open(self.log.path()) else {
            return Vec::new();
        };
        let len = f.metadata().map_or(0, |m| m.len());
        let start = if len < offset {
            // Rotated since the last read: the new file starts over.
            0
        } else {
            offset
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(start)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
        self.offset = Some(start + buf.len() as u64);
        buf
    }
}

impl ContainerOutput for ContainerLog {
    fn write(&self, stream: OutputStream, bytes: &[u8]) {
        let i = match stream {
            OutputStream::Stdout => 0,
            OutputStream::Stderr => 1,
        };
        let mut w = lock(&self.writer);
        if !w.taps.is_empty() {
            let chunk = Bytes::copy_from_slice(bytes);
            w.taps.retain(|tap| {
                !matches!(
                    tap.try_send((stream, chunk.clone())),
                    Err(mpsc::error::TrySendError::Closed(_))
                )
            });
        }
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut w.partial[i]);
            line.extend_from_slice(&rest[..nl]);
            self.append(&mut w, stream.as_str(), true, &line);
            rest = &rest[nl + 1..];
        }
        w.partial[i].extend_from_slice(rest);
        if w.partial[i].len() > MAX_PARTIAL {
            let partial = std::mem::take(&mut w.partial[i]);
            self.append(&mut w, stream.as_str(), false, &partial);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    async fn collect(log: Arc<ContainerLog>, options: LogOptions) -> String {
        let chunks: Vec<Bytes> = tokio::time::timeout(
            Duration::from_secs(10),
            log.stream(options).map(|c| c.unwrap()).collect::<Vec<_>>(),
        )
        .await
        .expect("stream ends");
        String::from_utf8(chunks.concat()).unwrap()
    }

    #[tokio::test]
    async fn a_tap_sees_output_from_now_as_it_comes_and_ends_with_the_run() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LogStore::new(tmp.path(), DEFAULT_MAX_FILE_BYTES);
        let log = store.open("ns", "p", "u", "c", 0).unwrap();
        log.write(OutputStream::Stdout, b"before\n");
        let mut tap = log.tap();
        let gone = log.tap();
        drop(gone);
        log.write(OutputStream::Stdout, b"/ # ");
        log.write(OutputStream::Stderr, b"oops\n");
        assert_eq!(
            tap.recv().await,
            Some((OutputStream::Stdout, Bytes::from_static(b"/ # ")))
        );
        assert_eq!(
            tap.recv().await,
            Some((OutputStream::Stderr, Bytes::from_static(b"oops\n")))
        );
        assert_eq!(
            lock(&log.writer).taps.len(),
            1,
            "a dropped tap is forgotten"
        );
        log.finish();
        assert_eq!(tap.recv().await, None);
        // A tap of an ended run ends at once.
        assert_eq!(log.tap().recv().await, None);
    }

    #[tokio::test]
    async fn runs_are_kept_current_and_previous_with_lines_assembled() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LogStore::new(tmp.path(), DEFAULT_MAX_FILE_BYTES);
        let first = store.open("ns", "p", "u", "c", 0).unwrap();
        first.write(OutputStream::Stdout, b"hel");
        first.write(OutputStream::Stdout, b"lo\nwor");
        first.write(OutputStream::Stderr, b"oops\n");
        first.finish();
        let second = store.open("ns", "p", "u", "c", 1).unwrap();
        second.write(OutputStream::Stdout, b"again\n");
        let cur = store.find("ns", "p", "c", false).unwrap();
        assert_eq!(collect(cur, LogOptions::default()).await, "again\n");
        let prev = store.find("ns", "p", "c", true).unwrap();
        assert_eq!(
            collect(prev.clone(), LogOptions::default()).await,
            "hello\noops\nwor\n"
        );
        let tail = LogOptions {
            tail_lines: Some(1),
            ..LogOptions::default()
        };
        assert_eq!(collect(prev, tail).await, "wor\n");
        store.open("ns", "p", "u", "c", 2).unwrap();
        assert!(
            !first.path().exists(),
            "runs older than the previous one are deleted"
        );
        let err = store.find("ns", "p", "zz", true).unwrap_err();
        assert!(matches!(err, LogError::BadRequest(_)));
        store.remove_pod("ns", "p", "u");
        assert!(store.find("ns", "p", "c", false).is_err());
    }

    #[tokio::test]
    async fn a_new_store_adopts_the_last_two_runs_an_earlier_one_left() {
        let tmp = tempfile::tempdir().unwrap();
        let earlier = LogStore::new(tmp.path(), DEFAULT_MAX_FILE_BYTES);
        for (run, line) in [(0, "zero\n"), (1, "one\n"), (2, "two\n")] {
            let log = earlier.open("ns", "p", "u", "c", run).unwrap();
            log.write(OutputStream::Stdout, line.as_bytes());
            log.finish();
        }
        // A store over the same directory, as an agent that restarted has.
        let store = LogStore::new(tmp.path(), DEFAULT_MAX_FILE_BYTES);
        assert!(store.find("ns", "p", "c", false).is_err());
        store.adopt("ns", "p", "u", "c");
        store.adopt("ns", "p", "u", "quiet");
        let cur = store.find("ns", "p", "c", false).unwrap();
        assert!(
            cur.is_finished(),
            "an adopted run has ended: followers stop"
        );
        assert_eq!(collect(cur, LogOptions::default()).await, "two\n");
        let prev = store.find("ns", "p", "c", true).unwrap();
        assert_eq!(collect(prev, LogOptions::default()).await, "one\n");
        assert!(
            store.find("ns", "p", "quiet", false).is_err(),
            "a container that never wrote has nothing to adopt"
        );
    }

    #[tokio::test]
    async fn a_quiet_container_creates_no_files_until_its_first_line() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LogStore::new(tmp.path(), DEFAULT_MAX_FILE_BYTES);
        let log = store.open("ns", "p", "u", "c", 0).unwrap();
        assert!(
            std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
            "opening a log creates nothing"
        );
        let found = store.find("ns", "p", "c", false).unwrap();
        assert_eq!(collect(found.clone(), LogOptions::default()).await, "");
        log.write(OutputStream::Stdout, b"first\n");
        assert!(log.path().exists());
        assert_eq!(collect(found, LogOptions::default()).await, "first\n");
    }

    #[tokio::test]
    async fn follow_streams_until_the_run_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LogStore::new(tmp.path(), DEFAULT_MAX_FILE_BYTES);
        let log = store.open("ns", "p", "u", "c", 0).unwrap();
        log.write(OutputStream::Stdout, b"one\n");
        let follower = tokio::spawn(collect(
            log.clone(),
            LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
        log.write(OutputStream::Stdout, b"two\n");
        tokio::time::sleep(Duration::from_millis(250)).await;
        log.write(OutputStream::Stdout, b"three");
        log.finish();
        assert_eq!(follower.await.unwrap(), "one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn files_rotate_at_their_size_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LogStore::new(tmp.path(), 1024);
        let log = store.open("ns", "p", "u", "c", 0).unwrap();
        for i in 0..100 {
            log.write(
                OutputStream::Stdout,
                format!("line {i:03} {}\n", "x".repeat(20)).as_bytes(),
            );
        }
        log.finish();
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert!(size(log.path()) <= 1024 && size(&log.rotated()) <= 1024);
        let text = collect(log, LogOptions::default()).await;
        assert!(
            text.ends_with(&format!("line 099 {}\n", "x".repeat(20))),
            "{text}"
        );
        assert!(
            !text.contains("line 000"),
            "the oldest lines were rotated away"
        );
    }
}
