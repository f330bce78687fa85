//! The embedded store backend: one redb file, group commit, an in-memory read index.
//!
//! Writes go to a single committer thread. It takes every write waiting in its queue (up to
//! `max_batch`), checks each against the current state (compare-and-swap), appends all of them
//! as ONE record to the write-ahead log ([`super::wal`]) and flushes it; only then does it update
//! the in-memory index, acknowledge each writer and append to the watch log, and after that it
//! hands the batch to the *applier* thread, which writes it into redb in a transaction that is
//! not flushed (batches that arrive within [`APPLY_LINGER`] of the first share one) while the
//! committer flushes the next record.
//! Nobody waits for redb: reads never touch it, and the log already holds the batch. So
//! concurrent writers share one `fdatasync`, and nobody hears "done" before their write is on
//! disk. Every so often (the log half full, or [`CHECKPOINT_INTERVAL`] passed) a durable redb
//! commit, a *checkpoint*, waits for the applier and makes the log's records redundant, and the
//! log starts over; opening the store replays what the log holds after the last checkpoint
//! (skipping what redb already has). A checkpoint comes in two halves so that writers do not
//! wait for redb's big flush: the applier first commits durably what it has applied while the
//! committer goes on logging, then the checkpoint proper flushes only what came after. A batch
//! too large for the log is committed durably to redb directly.
//!
//! Reads are served from the in-memory index (a `BTreeMap` mirror of the data table, loaded at
//! open), so they never touch the disk or wait for the committer.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::stats::{StoreCounters, StoreStats};
use super::wal::Wal;
use super::watch::{EventType, WatchEvent, WatchLog, WatchStream};
use super::{Entry, ListOptions, ListResult, Revision, Store, StoreError, StoreFuture};

const DATA: TableDefinition<&str, &[u8]> = TableDefinition::new("data");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
/// The write-ahead log's epoch: records of another epoch are not replayed.
const META_EPOCH: &str = "wal_epoch";

/// The longest the log goes without a checkpoint while it has records.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// How long the applier gathers logged batches into one redb transaction before applying
/// them (a barrier or a flush ends the wait at once).
pub const APPLY_LINGER: Duration = Duration::from_millis(5);

/// redb's page cache unless configured: 64 MiB.
pub const DEFAULT_CACHE_SIZE: usize = 64 << 20;

/// The write-ahead log's size unless configured: 8 MiB.
pub const DEFAULT_WAL_SIZE: u64 = 8 << 20;

/// Settings of the redb backend.
#[derive(Debug, Clone)]
pub struct RedbStoreConfig {
    /// The database file.
    pub path: PathBuf,
    /// How long watch events are retained for resuming watches.
    pub watch_window: Duration,
    /// The newest events always retained, whatever their age.
    pub watch_min_events: usize,
    /// The most writes committed in one transaction.
    pub max_batch: usize,
    /// Size of the write-ahead log file (next to the database, extension `wal`); 0 turns the
    /// log off, and every batch is then a durable redb commit of its own.
    pub wal_size: u64,
    /// Bytes of redb's page cache. Reads are served from memory, so redb's pages are only
    /// read on the write path (and at start-up): its default, 1 GiB, would mostly hold a
    /// second copy of the data.
    pub cache_size: usize,
}

impl RedbStoreConfig {
    /// Defaults for a database at `path`: a 5-minute watch window (as kube-apiserver's etcd
    /// compaction interval), at least 1,000 events kept, batches of up to 4,096 writes, an
    /// 8 MiB write-ahead log, a 64 MiB page cache.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RedbStoreConfig {
            path: path.into(),
            watch_window: Duration::from_secs(300),
            watch_min_events: 1000,
            max_batch: 4096,
            wal_size: DEFAULT_WAL_SIZE,
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }

    /// The write-ahead log's path: the database's, with extension `wal`.
    pub fn wal_path(&self) -> PathBuf {
        self.path.with_extension("wal")
    }
}

enum OpKind {
    Create,
    Update(Option<Revision>),
    Delete(Option<Revision>),
}

enum Command {
    Write {
        kind: OpKind,
        key: String,
        value: Bytes,
        respond: oneshot::Sender<Result<Entry, StoreError>>,
    },
    Close(std::sync::mpsc::Sender<()>),
}

struct State {
    data: BTreeMap<String, Entry>,
    revision: Revision,
    log: WatchLog,
}

/// The redb-backed [`Store`]. Cloning is cheap; the database closes when the last clone is
/// dropped or [`RedbStore::close`] is called.
#[derive(Clone)]
pub struct RedbStore {
    state: Arc<Mutex<State>>,
    commands: mpsc::Sender<Command>,
    counters: Arc<StoreCounters>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("revision", &self.current_revision())
            .finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + e.value.len());
    out.extend_from_slice(&e.create_revision.to_le_bytes());
    out.extend_from_slice(&e.mod_revision.to_le_bytes());
    out.extend_from_slice(&e.value);
    out
}

fn decode_entry(key: &str, bytes: &[u8]) -> Result<Entry, StoreError> {
    if bytes.len() < 16 {
        return Err(StoreError::Backend(format!("corrupt entry for {key}")));
    }
    let create_revision = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let mod_revision = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    Ok(Entry {
        key: key.to_string(),
        value: Bytes::copy_from_slice(&bytes[16..]),
        create_revision,
        mod_revision,
    })
}

fn put_chunk(out: &mut Vec<u8>, chunk: &[u8]) {
    out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
    out.extend_from_slice(chunk);
}

fn encode_event(e: &WatchEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + e.key.len() + e.value.len());
    out.push(e.event_type.to_byte());
    out.extend_from_slice(&e.time_ms.to_le_bytes());
    put_chunk(&mut out, e.key.as_bytes());
    put_chunk(&mut out, &e.value);
    match &e.prev {
        Some(p) => {
            out.push(1);
            put_chunk(&mut out, p);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&e.create_revision.to_le_bytes());
    out.extend_from_slice(&e.prev_revision.to_le_bytes());
    out
}

fn decode_event(revision: Revision, bytes: &[u8]) -> Option<WatchEvent> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    fn chunk<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize;
        take(b, len)
    }
    let mut b = bytes;
    let event_type = EventType::from_byte(take(&mut b, 1)?[0])?;
    let time_ms = u64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
    let key = String::from_utf8(chunk(&mut b)?.to_vec()).ok()?;
    let value = Bytes::copy_from_slice(chunk(&mut b)?);
    let prev = match take(&mut b, 1)?[0] {
        1 => Some(Bytes::copy_from_slice(chunk(&mut b)?)),
        _ => None,
    };
    // Events written before the revisions were recorded end here: both read as unknown (0).
    let revision_of = |b: &mut &[u8]| {
        take(b, 8).map_or(0, |r| u64::from_le_bytes(r.try_into().expect("8 bytes")))
    };
    let create_revision = revision_of(&mut b);
    let prev_revision = revision_of(&mut b);
    Some(WatchEvent {
        revision,
        event_type,
        key,
        value,
        prev,
        prev_revision,
        create_revision,
        time_ms,
    })
}

/// One write as the write-ahead log records it: the event without its previous value (replay
/// reads that from the data it is applied to) plus the key's creation revision.
fn encode_ops<E: Borrow<WatchEvent>>(events: &[E], create_revs: &[Revision]) -> Vec<u8> {
    let size: usize = events
        .iter()
        .map(|e| 33 + 8 + e.borrow().key.len() + e.borrow().value.len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for (e, create_rev) in events.iter().zip(create_revs) {
        let e = e.borrow();
        out.push(e.event_type.to_byte());
        out.extend_from_slice(&e.revision.to_le_bytes());
        out.extend_from_slice(&create_rev.to_le_bytes());
        out.extend_from_slice(&e.time_ms.to_le_bytes());
        put_chunk(&mut out, e.key.as_bytes());
        let value: &[u8] = if e.event_type == EventType::Deleted {
            &[]
        } else {
            &e.value
        };
        put_chunk(&mut out, value);
    }
    out
}

/// A write read back from the log by [`decode_ops`].
struct LoggedOp {
    event_type: EventType,
    revision: Revision,
    create_revision: Revision,
    time_ms: u64,
    key: String,
    value: Bytes,
}

fn decode_ops(payload: &[u8]) -> Option<Vec<LoggedOp>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    fn u64_of(b: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))
    }
    fn chunk<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize;
        take(b, len)
    }
    let mut b = payload;
    let mut ops = Vec::new();
    while !b.is_empty() {
        ops.push(LoggedOp {
            event_type: EventType::from_byte(take(&mut b, 1)?[0])?,
            revision: u64_of(&mut b)?,
            create_revision: u64_of(&mut b)?,
            time_ms: u64_of(&mut b)?,
            key: String::from_utf8(chunk(&mut b)?.to_vec()).ok()?,
            value: Bytes::copy_from_slice(chunk(&mut b)?),
        });
    }
    Some(ops)
}

/// Applies the log's records after `revision` to `data` and `events` (the state loaded from
/// redb), collecting what changed in `overlay`; returns the new revision.
fn replay(
    records: &[Vec<u8>],
    mut revision: Revision,
    data: &mut BTreeMap<String, Entry>,
    events: &mut Vec<WatchEvent>,
    overlay: &mut HashMap<String, Option<Entry>>,
) -> Result<Revision, StoreError> {
    let corrupt = |why: String| StoreError::Backend(format!("write-ahead log: {why}"));
    for record in records {
        let ops = decode_ops(record).ok_or_else(|| corrupt("undecodable record".into()))?;
        for op in ops {
            if op.revision <= revision {
                continue;
            }
            if op.revision != revision + 1 {
                return Err(corrupt(format!(
                    "revision {} follows {revision}",
                    op.revision
                )));
            }
            revision = op.revision;
            let (prev, prev_revision) = data
                .get(&op.key)
                .map_or((None, 0), |e| (Some(e.value.clone()), e.mod_revision));
            let value = match (op.event_type, &prev) {
                (EventType::Added, None) | (EventType::Modified, Some(_)) => {
                    let entry = Entry {
                        key: op.key.clone(),
                        value: op.value.clone(),
                        create_revision: op.create_revision,
                        mod_revision: op.revision,
                    };
                    data.insert(op.key.clone(), entry.clone());
                    overlay.insert(op.key.clone(), Some(entry));
                    op.value
                }
                (EventType::Deleted, Some(p)) => {
                    let p = p.clone();
                    data.remove(&op.key);
                    overlay.insert(op.key.clone(), None);
                    p
                }
                (t, _) => {
                    return Err(corrupt(format!(
                        "{t:?} of {} at revision {} does not match the data",
                        op.key, op.revision
                    )));
                }
            };
            events.push(WatchEvent {
                revision: op.revision,
                event_type: op.event_type,
                key: op.key,
                value,
                prev,
                prev_revision,
                create_revision: op.create_revision,
                time_ms: op.time_ms,
            });
        }
    }
    Ok(revision)
}

impl RedbStore {
    /// Opens (or creates) the database and starts its committer thread.
    pub fn open(config: RedbStoreConfig) -> Result<RedbStore, StoreError> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir).map_err(backend)?;
        }
        let db = Database::builder()
            .set_cache_size(config.cache_size)
            .create(&config.path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Backend(format!(
                    "{} is in use by another process (another flotilla server on this data dir?)",
                    config.path.display()
                )),
                e => backend(e),
            })?;
        // Make sure the tables exist so read transactions can open them.
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(DATA).map_err(backend)?;
            txn.open_table(EVENTS).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;

        let (mut data, revision, compacted, mut events, epoch) = {
            let txn = db.begin_read().map_err(backend)?;
            let meta = txn.open_table(META).map_err(backend)?;
            let revision = meta
                .get(META_REVISION)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            let compacted = meta
                .get(META_COMPACTED)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            let epoch = meta
                .get(META_EPOCH)
                .map_err(backend)?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut data = BTreeMap::new();
            for row in txn
                .open_table(DATA)
                .map_err(backend)?
                .iter()
                .map_err(backend)?
            {
                let (k, v) = row.map_err(backend)?;
                let entry = decode_entry(k.value(), v.value())?;
                data.insert(entry.key.clone(), entry);
            }
            let mut events = Vec::new();
            for row in txn
                .open_table(EVENTS)
                .map_err(backend)?
                .iter()
                .map_err(backend)?
            {
                let (k, v) = row.map_err(backend)?;
                let rev = k.value();
                let event = decode_event(rev, v.value()).ok_or_else(|| {
                    StoreError::Backend(format!("corrupt watch event at revision {rev}"))
                })?;
                events.push(event);
            }
            (data, revision, compacted, events, epoch)
        };
        // What the log holds after the last checkpoint, made durable in redb at once; the log
        // then starts a new epoch.
        let (mut wal, records) =
            Wal::open(&config.wal_path(), config.wal_size, epoch).map_err(backend)?;
        let mut overlay = HashMap::new();
        let first_replayed = events.len();
        let revision = replay(&records, revision, &mut data, &mut events, &mut overlay)?;
        if !records.is_empty() {
            tracing::info!(
                records = records.len(),
                writes = events.len() - first_replayed,
                revision,
                "store: replayed the write-ahead log"
            );
        }
        persist(
            &db,
            &overlay,
            &events[first_replayed..],
            revision,
            compacted,
            epoch + 1,
            Durability::Immediate,
        )?;
        wal.restart(epoch + 1);
        // With no retained events, nothing before the current revision can be replayed.
        let compacted = if events.is_empty() {
            revision
        } else {
            compacted
        };
        let state = Arc::new(Mutex::new(State {
            data,
            revision,
            log: WatchLog::new(compacted, events),
        }));
        let (tx, rx) = mpsc::channel();
        let db = Arc::new(db);
        let failed = Arc::new(OnceLock::new());
        let (apply_tx, apply_rx) = mpsc::channel();
        let applier = Applier {
            db: db.clone(),
            failed: failed.clone(),
        };
        let applier = thread::Builder::new()
            .name("store-applier".into())
            .spawn(move || applier.run(apply_rx))
            .map_err(backend)?;
        let counters = Arc::new(StoreCounters::default());
        let committer = Committer {
            db,
            wal,
            counters: counters.clone(),
            state: state.clone(),
            config,
            last_compaction: Instant::now(),
            last_checkpoint: Instant::now(),
            failed,
            applier: Some((apply_tx, applier)),
            flushing: None,
        };
        thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || committer.run(rx))
            .map_err(backend)?;
        Ok(RedbStore {
            state,
            commands: tx,
            counters,
        })
    }

    /// Stops the committer and closes the database file, waiting until it is closed.
    pub fn close(&self) {
        let (tx, rx) = mpsc::channel();
        if self.commands.send(Command::Close(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    fn write(&self, kind: OpKind, key: String, value: Bytes) -> StoreFuture<'_, Entry> {
        let (respond, rx) = oneshot::channel();
        let sent = self.commands.send(Command::Write {
            kind,
            key,
            value,
            respond,
        });
        Box::pin(async move {
            sent.map_err(|_| StoreError::Backend("store is closed".into()))?;
            rx.await
                .map_err(|_| StoreError::Backend("store is closed".into()))?
        })
    }

    /// Number of watch events currently retained (for metrics and tests).
    pub fn retained_events(&self) -> usize {
        self.state.lock().expect("store state lock").log.len()
    }
}

impl Store for RedbStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Entry>> {
        let found = self
            .state
            .lock()
            .expect("store state lock")
            .data
            .get(key)
            .cloned();
        Box::pin(async move { Ok(found) })
    }

    fn list<'a>(&'a self, prefix: &'a str, options: ListOptions) -> StoreFuture<'a, ListResult> {
        let state = self.state.lock().expect("store state lock");
        let start_after = options
            .start_after
            .as_deref()
            .filter(|after| *after >= prefix);
        let start = match start_after {
            Some(after) => std::ops::Bound::Excluded(after),
            None => std::ops::Bound::Included(prefix),
        };
        let now = state
            .data
            .range::<str, _>((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        // A past revision: the present state with the keys changed since put back as they were.
        let (revision, then) = match options.revision {
            Some(at) if at < state.revision => match state.log.history(prefix, start_after, at) {
                Ok(then) => (at, then),
                Err(e) => return Box::pin(async move { Err(e) }),
            },
            _ => (state.revision, BTreeMap::new()),
        };
        let mut entries = Vec::new();
        let mut more = false;
        for entry in merge_history(now, then) {
            if options.limit > 0 && entries.len() == options.limit {
                more = true;
                break;
            }
            entries.push(entry);
        }
        drop(state);
        Box::pin(async move {
            Ok(ListResult {
                entries,
                revision,
                more,
            })
        })
    }

    fn create(&self, key: String, value: Bytes) -> StoreFuture<'_, Entry> {
        self.write(OpKind::Create, key, value)
    }

    fn update(
        &self,
        key: String,
        value: Bytes,
        expected: Option<Revision>,
    ) -> StoreFuture<'_, Entry> {
        self.write(OpKind::Update(expected), key, value)
    }

    fn delete(&self, key: String, expected: Option<Revision>) -> StoreFuture<'_, Entry> {
        self.write(OpKind::Delete(expected), key, Bytes::new())
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        self.state
            .lock()
            .expect("store state lock")
            .log
            .subscribe(prefix, after)
    }

    fn current_revision(&self) -> Revision {
        self.state.lock().expect("store state lock").revision
    }

    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }
}

type Responder = oneshot::Sender<Result<Entry, StoreError>>;

struct Committer {
    db: Arc<Database>,
    wal: Wal,
    counters: Arc<StoreCounters>,
    state: Arc<Mutex<State>>,
    config: RedbStoreConfig,
    last_compaction: Instant,
    last_checkpoint: Instant,
    /// Set when a batch reached the log but not redb: from then on every write fails (its
    /// fate on disk is the log's, and replay at the next open settles it).
    failed: Arc<OnceLock<StoreError>>,
    /// The thread applying logged batches to redb, and the way to it.
    applier: Option<(mpsc::Sender<Apply>, thread::JoinHandle<()>)>,
    /// The answer to come from the applier's [`Apply::Flush`] while a checkpoint's first half
    /// runs.
    flushing: Option<mpsc::Receiver<Result<(), StoreError>>>,
}

/// Work for the [`Applier`].
enum Apply {
    /// A logged and acknowledged batch to write into redb.
    Batch(LoggedBatch),
    /// Answered once every batch sent before it is in redb, or with the error that stopped
    /// the applier.
    Barrier(mpsc::Sender<Result<(), StoreError>>),
    /// Like a barrier, but the batches are committed durably: the long half of a checkpoint
    /// (flushing the pages redb wrote since the last one), done while the committer carries on
    /// logging, so that the checkpoint itself only flushes what came after.
    Flush(mpsc::Sender<Result<(), StoreError>>),
}

/// A batch as [`persist`] writes it.
struct LoggedBatch {
    overlay: HashMap<String, Option<Entry>>,
    events: Vec<Arc<WatchEvent>>,
    revision: Revision,
    compacted: Revision,
    epoch: u64,
}

impl LoggedBatch {
    /// Folds a later batch into this one: its writes win, its events follow.
    fn merge(&mut self, later: LoggedBatch) {
        self.overlay.extend(later.overlay);
        self.events.extend(later.events);
        self.revision = later.revision;
        self.compacted = later.compacted;
        self.epoch = later.epoch;
    }
}

/// Applies logged batches to redb, unflushed, on its own thread, so the committer can flush
/// the next batch's log record meanwhile. Batches queued when it gets to them share one
/// transaction. Its first failure stops it and is reported through `failed`.
struct Applier {
    db: Arc<Database>,
    failed: Arc<OnceLock<StoreError>>,
}

impl Applier {
    fn run(self, rx: mpsc::Receiver<Apply>) {
        while let Ok(first) = rx.recv() {
            let until = Instant::now() + APPLY_LINGER;
            let mut pending: Option<LoggedBatch> = None;
            let (mut barrier, mut durable) = (None, false);
            let mut next = Some(first);
            while let Some(work) = next.take() {
                match work {
                    Apply::Batch(b) => match &mut pending {
                        Some(p) => p.merge(b),
                        None => pending = Some(b),
                    },
                    Apply::Barrier(done) => {
                        barrier = Some(done);
                        break;
                    }
                    Apply::Flush(done) => {
                        (barrier, durable) = (Some(done), true);
                        break;
                    }
                }
                // Wait a little for more: redb's cost is mostly per transaction, and nobody
                // waits for this one (reads are served from memory). The wait is a park, not a
                // blocking receive, so that the committer's batches do not wake this thread
                // one by one (a context switch per batch, on the committer's time); barriers
                // and flushes unpark it at once.
                next = loop {
                    match rx.try_recv() {
                        Ok(work) => break Some(work),
                        Err(mpsc::TryRecvError::Disconnected) => break None,
                        Err(mpsc::TryRecvError::Empty) => {
                            let left = until.saturating_duration_since(Instant::now());
                            if left.is_zero() {
                                break None;
                            }
                            thread::park_timeout(left);
                        }
                    }
                };
            }
            let durability = if durable {
                Durability::Immediate
            } else {
                Durability::None
            };
            let applied = match pending {
                _ if self.failed.get().is_some() => Ok(()),
                Some(b) => persist(
                    &self.db,
                    &b.overlay,
                    &b.events,
                    b.revision,
                    b.compacted,
                    b.epoch,
                    durability,
                ),
                // Nothing new: a durable commit of no change still makes redb's earlier,
                // unflushed commits durable (and writes no metadata that could be stale).
                None if durable => (|| {
                    let mut txn = self.db.begin_write().map_err(backend)?;
                    txn.set_durability(Durability::Immediate).map_err(backend)?;
                    txn.commit().map_err(backend)
                })(),
                None => Ok(()),
            };
            if let Err(e) = applied {
                tracing::error!(error = %e, "store: a logged batch did not reach redb; refusing further writes");
                let _ = self.failed.set(e);
            }
            if let Some(done) = barrier {
                let _ = done.send(self.failed.get().map_or(Ok(()), |e| Err(e.clone())));
            }
        }
    }
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        'outer: loop {
            let first = match rx.recv_timeout(CHECKPOINT_INTERVAL) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.wal.used() > 0 {
                        self.checkpoint();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut close = None;
            match first {
                Command::Write {
                    kind,
                    key,
                    value,
                    respond,
                } => batch.push((kind, key, value, respond)),
                Command::Close(done) => close = Some(done),
            }
            while close.is_none() && batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(Command::Write {
                        kind,
                        key,
                        value,
                        respond,
                    }) => batch.push((kind, key, value, respond)),
                    Ok(Command::Close(done)) => close = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit_batch(std::mem::take(&mut batch));
            }
            if let Some(done) = close {
                // Fail every write still queued, then close the file.
                while let Ok(c) = rx.try_recv() {
                    if let Command::Write { respond, .. } = c {
                        let _ = respond.send(Err(StoreError::Backend("store is closed".into())));
                    }
                }
                if self.wal.used() > 0 && self.failed.get().is_none() {
                    self.checkpoint();
                }
                self.stop_applier();
                drop(self);
                let _ = done.send(());
                break 'outer;
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<(OpKind, String, Bytes, Responder)>) {
        let time_ms = now_ms();
        let (mut revision, compacted) = {
            let s = self.state.lock().expect("store state lock");
            (s.revision, s.log.compacted())
        };
        // Keys written earlier in this batch: their new entry, or None once deleted.
        let mut overlay: HashMap<String, Option<Entry>> = HashMap::new();
        let mut results: Vec<(Responder, Result<Entry, StoreError>)> =
            Vec::with_capacity(batch.len());
        let mut events: Vec<WatchEvent> = Vec::new();
        // Each event's key's creation revision, for the log.
        let mut create_revs: Vec<Revision> = Vec::new();
        {
            let state = self.state.lock().expect("store state lock");
            for (kind, key, value, respond) in batch {
                let current = match overlay.get(&key) {
                    Some(e) => e.clone(),
                    None => state.data.get(&key).cloned(),
                };
                let outcome = match (kind, current) {
                    (OpKind::Create, Some(_)) => Err(StoreError::AlreadyExists(key)),
                    (OpKind::Create, None) => {
                        revision += 1;
                        let entry = Entry {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: revision,
                            mod_revision: revision,
                        };
                        create_revs.push(revision);
                        events.push(WatchEvent {
                            revision,
                            event_type: EventType::Added,
                            key: key.clone(),
                            value,
                            prev: None,
                            prev_revision: 0,
                            create_revision: revision,
                            time_ms,
                        });
                        overlay.insert(key, Some(entry.clone()));
                        Ok(entry)
                    }
                    (OpKind::Update(_) | OpKind::Delete(_), None) => Err(StoreError::NotFound(key)),
                    (
                        OpKind::Update(Some(expected)) | OpKind::Delete(Some(expected)),
                        Some(cur),
                    ) if cur.mod_revision != expected => Err(StoreError::Conflict {
                        key,
                        expected,
                        actual: cur.mod_revision,
                    }),
                    (OpKind::Update(_), Some(cur)) => {
                        revision += 1;
                        let entry = Entry {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: cur.create_revision,
                            mod_revision: revision,
                        };
                        create_revs.push(cur.create_revision);
                        events.push(WatchEvent {
                            revision,
                            event_type: EventType::Modified,
                            key: key.clone(),
                            value,
                            prev: Some(cur.value),
                            prev_revision: cur.mod_revision,
                            create_revision: cur.create_revision,
                            time_ms,
                        });
                        overlay.insert(key, Some(entry.clone()));
                        Ok(entry)
                    }
                    (OpKind::Delete(_), Some(cur)) => {
                        revision += 1;
                        let prev_revision = cur.mod_revision;
                        let entry = Entry {
                            mod_revision: revision,
                            ..cur
                        };
                        create_revs.push(entry.create_revision);
                        events.push(WatchEvent {
                            revision,
                            event_type: EventType::Deleted,
                            key: key.clone(),
                            value: entry.value.clone(),
                            prev: Some(entry.value.clone()),
                            prev_revision,
                            create_revision: entry.create_revision,
                            time_ms,
                        });
                        overlay.insert(key, None);
                        Ok(entry)
                    }
                };
                results.push((respond, outcome));
            }
        }

        if events.is_empty() {
            for (respond, outcome) in results {
                let _ = respond.send(outcome);
            }
            return;
        }

        if let Some(e) = self.failed.get() {
            for (respond, outcome) in results {
                let _ = respond.send(outcome.and(Err(e.clone())));
            }
            return;
        }
        let compact_to = self.compaction_point(time_ms);
        let compacted = compact_to.unwrap_or(compacted);
        let events: Vec<Arc<WatchEvent>> = events.into_iter().map(Arc::new).collect();
        let payload = encode_ops(&events, &create_revs);
        if self.wal.fits(payload.len()) {
            let started = Instant::now();
            if let Err(e) = self.wal.append(&payload).map_err(backend) {
                tracing::error!(error = %e, "store: write-ahead log append failed");
                for (respond, outcome) in results {
                    let _ = respond.send(outcome.and(Err(e.clone())));
                }
                return;
            }
            self.counters.batch(events.len(), started.elapsed());
            // Durable from here on: the log holds the batch. Acknowledge and publish it, then
            // hand it to the applier for redb; reads are served from memory, so nobody waits
            // for redb.
            self.publish(&overlay, &events, results, revision, compact_to);
            let batch = LoggedBatch {
                overlay,
                events,
                revision,
                compacted,
                epoch: self.wal.epoch(),
            };
            let sent = self
                .applier
                .as_ref()
                .is_some_and(|(tx, _)| tx.send(Apply::Batch(batch)).is_ok());
            if !sent {
                let _ = self.failed.set(applier_stopped());
            }
        } else {
            // Larger than the log: straight into redb, durably, as a checkpoint of its own,
            // after the batches before it.
            let epoch = self.wal.epoch() + 1;
            let started = Instant::now();
            let applied = self.wait_for_applier().and_then(|()| {
                persist(
                    &self.db,
                    &overlay,
                    &events,
                    revision,
                    compacted,
                    epoch,
                    Durability::Immediate,
                )
            });
            if let Err(e) = applied {
                tracing::error!(error = %e, "store commit failed");
                for (respond, outcome) in results {
                    let _ = respond.send(outcome.and(Err(e.clone())));
                }
                return;
            }
            self.counters.batch(events.len(), started.elapsed());
            self.counters.checkpoint();
            self.wal.restart(epoch);
            self.last_checkpoint = Instant::now();
            self.publish(&overlay, &events, results, revision, compact_to);
        }
        if self.wal.used() > 0
            && (self.wal.used() > self.wal.capacity() / 2
                || self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL)
        {
            self.advance_checkpoint();
        }
    }

    /// Makes a durable batch visible: applies it to the in-memory data, acknowledges its
    /// writers, then appends its events to the watch log.
    fn publish(
        &self,
        overlay: &HashMap<String, Option<Entry>>,
        events: &[Arc<WatchEvent>],
        results: Vec<(Responder, Result<Entry, StoreError>)>,
        revision: Revision,
        compact_to: Option<Revision>,
    ) {
        let mut state = self.state.lock().expect("store state lock");
        for (key, entry) in overlay {
            match entry {
                Some(e) => {
                    state.data.insert(key.clone(), e.clone());
                }
                None => {
                    state.data.remove(key);
                }
            }
        }
        state.revision = revision;
        // Acknowledge the writers before waking the watchers: the responses are then queued
        // for the runtime's workers ahead of the watchers' work. Nobody can observe the state
        // in between, since both happen under the lock.
        for (respond, outcome) in results {
            let _ = respond.send(outcome);
        }
        state.log.append(events.iter().cloned());
        if let Some(point) = compact_to {
            state.log.compact_through(point);
        }
    }

    /// Hands the applier work it must not linger over (a barrier or a flush): sends it and
    /// unparks the thread. Batches are sent without the unpark, so they do not wake it.
    fn send_now(&self, work: Apply) -> Result<(), StoreError> {
        let (applier, handle) = self.applier.as_ref().ok_or_else(applier_stopped)?;
        applier.send(work).map_err(|_| applier_stopped())?;
        handle.thread().unpark();
        Ok(())
    }

    /// Waits until the applier has written every batch handed to it into redb.
    fn wait_for_applier(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.send_now(Apply::Barrier(tx))?;
        rx.recv().map_err(|_| applier_stopped())?
    }

    /// Stops the applier thread once it has finished its work, so the file can close.
    fn stop_applier(&mut self) {
        if let Some((tx, handle)) = self.applier.take() {
            drop(tx);
            handle.thread().unpark();
            let _ = handle.join();
        }
    }

    /// Moves a due checkpoint on without making the writers wait for redb's big flush: the
    /// first call asks the applier for a durable commit of what it has applied, later calls
    /// find it done and then run [`Committer::checkpoint`], which has little left to flush.
    fn advance_checkpoint(&mut self) {
        match self.flushing.take() {
            None => {
                let (tx, rx) = mpsc::channel();
                if self.send_now(Apply::Flush(tx)).is_ok() {
                    self.flushing = Some(rx);
                } else {
                    self.checkpoint();
                }
            }
            Some(rx) => match rx.try_recv() {
                Err(mpsc::TryRecvError::Empty) => self.flushing = Some(rx),
                // Done (or failed: then the checkpoint fails too and says so).
                _ => self.checkpoint(),
            },
        }
    }

    /// Makes everything logged so far durable in redb and starts the log over.
    fn checkpoint(&mut self) {
        self.flushing = None;
        let epoch = self.wal.epoch() + 1;
        let done = self.wait_for_applier().and_then(|()| {
            let txn = self.db.begin_write().map_err(backend)?;
            txn.open_table(META)
                .map_err(backend)?
                .insert(META_EPOCH, epoch)
                .map_err(backend)?;
            txn.commit().map_err(backend)
        });
        match done {
            Ok(()) => {
                self.counters.checkpoint();
                self.wal.restart(epoch);
            }
            // The log still holds every record since the last checkpoint: nothing is lost.
            Err(e) => tracing::warn!(error = %e, "store checkpoint failed; retrying later"),
        }
        self.last_checkpoint = Instant::now();
    }

    /// Decides, at most once a second, up to which revision the watch log is compacted.
    fn compaction_point(&mut self, now_ms: u64) -> Option<Revision> {
        if self.last_compaction.elapsed() < Duration::from_secs(1) {
            return None;
        }
        self.last_compaction = Instant::now();
        let state = self.state.lock().expect("store state lock");
        let cutoff = now_ms.saturating_sub(self.config.watch_window.as_millis() as u64);
        // The point the in-memory log will reach, computed without changing it yet.
        let point = state
            .log
            .probe_compaction(cutoff, self.config.watch_min_events);
        if point == state.log.compacted() {
            None
        } else {
            Some(point)
        }
    }
}

/// The error once the applier thread is gone.
/// The entries of a state read as of a past revision, in key order: `now`'s, except that each
/// key in `then` has its entry then (and is left out where it did not exist).
fn merge_history<'a>(
    now: impl Iterator<Item = (&'a String, &'a Entry)>,
    then: BTreeMap<String, Option<Entry>>,
) -> impl Iterator<Item = Entry> {
    let mut now = now.peekable();
    let mut then = then.into_iter().peekable();
    std::iter::from_fn(move || {
        loop {
            let from_now = match (now.peek(), then.peek()) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((k, _)), Some((t, _))) => k.as_str() < t.as_str(),
            };
            if from_now {
                return now.next().map(|(_, e)| e.clone());
            }
            let (key, entry) = then.next().expect("peeked");
            if now.peek().is_some_and(|(k, _)| **k == key) {
                now.next();
            }
            if entry.is_some() {
                return entry;
            }
        }
    })
}

fn applier_stopped() -> StoreError {
    StoreError::Backend("store: the redb applier stopped".into())
}

/// Writes a batch's data, its watch events and the metadata in one redb transaction.
fn persist<E: Borrow<WatchEvent>>(
    db: &Database,
    overlay: &HashMap<String, Option<Entry>>,
    events: &[E],
    revision: Revision,
    compacted: Revision,
    epoch: u64,
    durability: Durability,
) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(backend)?;
    txn.set_durability(durability).map_err(backend)?;
    {
        let mut data = txn.open_table(DATA).map_err(backend)?;
        for (key, entry) in overlay {
            match entry {
                Some(e) => {
                    data.insert(key.as_str(), encode_entry(e).as_slice())
                        .map_err(backend)?;
                }
                None => {
                    data.remove(key.as_str()).map_err(backend)?;
                }
            }
        }
        let mut log = txn.open_table(EVENTS).map_err(backend)?;
        for e in events {
            let e = e.borrow();
            log.insert(e.revision, encode_event(e).as_slice())
                .map_err(backend)?;
        }
        log.retain_in(..=compacted, |_, _| false).map_err(backend)?;
        let mut meta = txn.open_table(META).map_err(backend)?;
        meta.insert(META_REVISION, revision).map_err(backend)?;
        meta.insert(META_COMPACTED, compacted).map_err(backend)?;
        meta.insert(META_EPOCH, epoch).map_err(backend)?;
    }
    txn.commit().map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir) -> RedbStore {
        RedbStore::open(RedbStoreConfig::new(dir.path().join("store.redb"))).unwrap()
    }

    fn event(revision: Revision, event_type: EventType, key: &str, value: &str) -> WatchEvent {
        WatchEvent {
            revision,
            event_type,
            key: key.into(),
            value: Bytes::from(value.to_string()),
            prev: None,
            prev_revision: 0,
            create_revision: revision,
            time_ms: 1,
        }
    }

    #[test]
    fn merged_batches_keep_the_later_write_of_a_key_and_every_event_in_order() {
        let entry = |key: &str, value: &'static str, rev| Entry {
            key: key.into(),
            value: Bytes::from_static(value.as_bytes()),
            create_revision: 1,
            mod_revision: rev,
        };
        let batch =
            |writes: Vec<(&str, Option<Entry>)>, events: Vec<WatchEvent>, rev| LoggedBatch {
                overlay: writes
                    .into_iter()
                    .map(|(k, e)| (k.to_string(), e))
                    .collect(),
                events: events.into_iter().map(Arc::new).collect(),
                revision: rev,
                compacted: rev - 2,
                epoch: 3,
            };
        let mut first = batch(
            vec![
                ("/k/a", Some(entry("/k/a", "a1", 5))),
                ("/k/b", Some(entry("/k/b", "b1", 6))),
            ],
            vec![
                event(5, EventType::Added, "/k/a", "a1"),
                event(6, EventType::Added, "/k/b", "b1"),
            ],
            6,
        );
        first.merge(batch(
            vec![("/k/a", Some(entry("/k/a", "a2", 7))), ("/k/b", None)],
            vec![
                event(7, EventType::Modified, "/k/a", "a2"),
                event(8, EventType::Deleted, "/k/b", "b1"),
            ],
            8,
        ));
        assert_eq!(
            first.overlay["/k/a"].as_ref().unwrap().value,
            Bytes::from_static(b"a2")
        );
        assert!(first.overlay["/k/b"].is_none());
        let revisions: Vec<Revision> = first.events.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, [5, 6, 7, 8]);
        assert_eq!((first.revision, first.compacted), (8, 6));
    }

    #[test]
    fn replaying_the_log_rebuilds_data_and_events_with_previous_values() {
        let record = encode_ops(
            &[
                event(5, EventType::Added, "/k/b", "b1"),
                event(6, EventType::Modified, "/k/a", "a2"),
                event(7, EventType::Deleted, "/k/b", "b1"),
            ],
            &[5, 1, 5],
        );
        let mut data = BTreeMap::from([(
            "/k/a".to_string(),
            Entry {
                key: "/k/a".into(),
                value: Bytes::from_static(b"a1"),
                create_revision: 1,
                mod_revision: 4,
            },
        )]);
        let (mut events, mut overlay) = (Vec::new(), HashMap::new());
        let rev = replay(
            std::slice::from_ref(&record),
            4,
            &mut data,
            &mut events,
            &mut overlay,
        )
        .unwrap();
        assert_eq!(rev, 7);
        assert_eq!(data["/k/a"].value, Bytes::from_static(b"a2"));
        assert_eq!(
            (data["/k/a"].create_revision, data["/k/a"].mod_revision),
            (1, 6)
        );
        assert!(!data.contains_key("/k/b"));
        assert_eq!(overlay.get("/k/b"), Some(&None));
        let prevs: Vec<Option<&[u8]>> = events.iter().map(|e| e.prev.as_deref()).collect();
        assert_eq!(prevs, vec![None, Some(&b"a1"[..]), Some(&b"b1"[..])]);
        // A deletion carries the last value.
        assert_eq!(events[2].value, Bytes::from_static(b"b1"));
        // Records already in redb are skipped; a gap in revisions is corruption.
        let (mut e2, mut o2) = (Vec::new(), HashMap::new());
        assert_eq!(
            replay(
                std::slice::from_ref(&record),
                7,
                &mut data,
                &mut e2,
                &mut o2
            ),
            Ok(7)
        );
        assert!(e2.is_empty());
        let gap = encode_ops(&[event(9, EventType::Added, "/k/c", "c")], &[9]);
        assert!(replay(&[gap], 7, &mut data, &mut e2, &mut o2).is_err());
    }

    #[tokio::test]
    async fn writes_are_compare_and_swap_and_get_increasing_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        let a = s
            .create("/k/a".into(), Bytes::from_static(b"1"))
            .await
            .unwrap();
        assert_eq!(a.mod_revision, 1);
        assert_eq!(
            s.create("/k/a".into(), Bytes::new()).await,
            Err(StoreError::AlreadyExists("/k/a".into()))
        );
        let b = s
            .update("/k/a".into(), Bytes::from_static(b"2"), Some(1))
            .await
            .unwrap();
        assert_eq!((b.create_revision, b.mod_revision), (1, 2));
        assert!(matches!(
            s.update("/k/a".into(), Bytes::from_static(b"3"), Some(1))
                .await,
            Err(StoreError::Conflict {
                expected: 1,
                actual: 2,
                ..
            })
        ));
        let d = s.delete("/k/a".into(), None).await.unwrap();
        assert_eq!(d.mod_revision, 3);
        assert_eq!(s.get("/k/a").await.unwrap(), None);
        assert_eq!(s.current_revision(), 3);
    }

    #[tokio::test]
    async fn list_pages_by_key_within_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        for k in ["/p/a", "/p/b", "/p/c", "/q/a"] {
            s.create(k.into(), Bytes::new()).await.unwrap();
        }
        let page = s
            .list(
                "/p/",
                ListOptions {
                    limit: 2,
                    ..ListOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            page.entries
                .iter()
                .map(|e| e.key.as_str())
                .collect::<Vec<_>>(),
            ["/p/a", "/p/b"]
        );
        assert!(page.more);
        let rest = s
            .list(
                "/p/",
                ListOptions {
                    start_after: Some("/p/b".into()),
                    limit: 2,
                    ..ListOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(rest.entries.len(), 1);
        assert!(!rest.more);
    }

    #[tokio::test]
    async fn a_list_at_a_past_revision_is_the_state_then_in_pages_and_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        for k in ["/p/a", "/p/b", "/p/c", "/q/a"] {
            s.create(k.into(), Bytes::from(format!("{k} v1")))
                .await
                .unwrap();
        }
        let then = s.current_revision();
        s.update("/p/a".into(), Bytes::from("/p/a v2"), None)
            .await
            .unwrap();
        s.update("/p/a".into(), Bytes::from("/p/a v3"), None)
            .await
            .unwrap();
        s.delete("/p/b".into(), None).await.unwrap();
        s.delete("/p/c".into(), None).await.unwrap();
        s.create("/p/c".into(), Bytes::from("/p/c v2"))
            .await
            .unwrap();
        s.create("/p/d".into(), Bytes::from("/p/d v1"))
            .await
            .unwrap();
        let at = |start_after: Option<&str>, limit: usize| ListOptions {
            start_after: start_after.map(String::from),
            limit,
            revision: Some(then),
        };
        let shown = |r: &ListResult| -> Vec<(String, String, Revision)> {
            r.entries
                .iter()
                .map(|e| {
                    let value = String::from_utf8(e.value.to_vec()).unwrap();
                    (e.key.clone(), value, e.mod_revision)
                })
                .collect()
        };
        let expected = vec![
            ("/p/a".to_string(), "/p/a v1".to_string(), 1),
            ("/p/b".to_string(), "/p/b v1".to_string(), 2),
            ("/p/c".to_string(), "/p/c v1".to_string(), 3),
        ];
        let mut s = s;
        for reopened in [false, true] {
            if reopened {
                // The history comes back from the log and the events table.
                s.close();
                s = open(&dir);
            }
            let all = s.list("/p/", at(None, 0)).await.unwrap();
            assert_eq!(
                (shown(&all), all.revision, all.more),
                (expected.clone(), then, false)
            );
            let first = s.list("/p/", at(None, 2)).await.unwrap();
            assert_eq!((shown(&first), first.more), (expected[..2].to_vec(), true));
            let rest = s.list("/p/", at(Some("/p/b"), 2)).await.unwrap();
            assert_eq!((shown(&rest), rest.more), (expected[2..].to_vec(), false));
            // The present is unchanged by it.
            let now = s.list("/p/", ListOptions::default()).await.unwrap();
            let keys: Vec<_> = now.entries.iter().map(|e| e.key.as_str()).collect();
            assert_eq!(keys, ["/p/a", "/p/c", "/p/d"]);
            assert_eq!(now.revision, s.current_revision());
        }
    }

    #[tokio::test]
    async fn concurrent_writes_are_all_durable_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.create(format!("/c/{i:03}"), Bytes::from(vec![b'x'; 100]))
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        s.close();
        let s = open(&dir);
        let all = s.list("/c/", ListOptions::default()).await.unwrap();
        assert_eq!(all.entries.len(), 200);
        assert_eq!(all.revision, 200);
        // Watch events survive the restart too.
        let mut w = s.watch("/c/", 198).unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().revision, 199);
    }

    #[tokio::test]
    async fn a_page_cache_much_smaller_than_the_data_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = || {
            let mut c = RedbStoreConfig::new(dir.path().join("s.redb"));
            c.cache_size = 64 << 10;
            // Checkpoints during the run too, not only at close.
            c.wal_size = 1 << 20;
            c
        };
        let s = RedbStore::open(config()).unwrap();
        // About 4 MiB of values through a 64 KiB cache and a 1 MiB log, then updates of early
        // keys.
        for i in 0..2000 {
            s.create(format!("/c/{i:04}"), Bytes::from(vec![b'a'; 2000]))
                .await
                .unwrap();
        }
        for i in 0..100 {
            s.update(format!("/c/{i:04}"), Bytes::from(vec![b'b'; 2000]), None)
                .await
                .unwrap();
        }
        s.close();
        let s = RedbStore::open(config()).unwrap();
        let all = s.list("/c/", ListOptions::default()).await.unwrap();
        assert_eq!(all.entries.len(), 2000);
        assert_eq!(all.revision, 2100);
        assert!(all.entries[..100].iter().all(|e| e.value[0] == b'b'));
        assert!(
            all.entries[100..]
                .iter()
                .all(|e| e.value[0] == b'a' && e.value.len() == 2000)
        );
    }

    #[tokio::test]
    async fn writes_that_fill_a_small_log_again_and_again_checkpoint_in_two_halves_and_survive() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RedbStoreConfig::new(dir.path().join("store.redb"));
        config.wal_size = 64 * 1024;
        let s = RedbStore::open(config.clone()).unwrap();
        let value = |i: usize| Bytes::from(format!("{i:04}").repeat(256));
        for i in 0..400 {
            s.create(format!("/f/{i:03}"), value(i)).await.unwrap();
            if i % 50 == 0 {
                s.update(format!("/f/{i:03}"), Bytes::from_static(b"changed"), None)
                    .await
                    .unwrap();
            }
        }
        s.close();
        // 400 KiB through a 64 KiB log: it was checkpointed and restarted many times.
        {
            let db = Database::open(&config.path).unwrap();
            let txn = db.begin_read().unwrap();
            let meta = txn.open_table(META).unwrap();
            let epoch = meta.get(META_EPOCH).unwrap().unwrap().value();
            assert!(epoch >= 10, "only {epoch} checkpoints");
        }
        let s = RedbStore::open(config).unwrap();
        let all = s.list("/f/", ListOptions::default()).await.unwrap();
        assert_eq!(all.entries.len(), 400);
        assert_eq!(all.revision, 408);
        for (i, e) in all.entries.iter().enumerate() {
            let want = if i % 50 == 0 {
                Bytes::from_static(b"changed")
            } else {
                value(i)
            };
            assert_eq!(e.value, want, "entry {i}");
        }
        s.close();
    }

    #[tokio::test]
    async fn a_watch_sees_creates_updates_and_deletes_with_previous_values() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        let mut w = s.watch("/w/", 0).unwrap();
        s.create("/w/x".into(), Bytes::from_static(b"1"))
            .await
            .unwrap();
        s.update("/w/x".into(), Bytes::from_static(b"2"), None)
            .await
            .unwrap();
        s.delete("/w/x".into(), None).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.push((e.event_type, e.value.clone(), e.prev.clone()));
        }
        assert_eq!(seen[0], (EventType::Added, Bytes::from_static(b"1"), None));
        assert_eq!(
            seen[1],
            (
                EventType::Modified,
                Bytes::from_static(b"2"),
                Some(Bytes::from_static(b"1"))
            )
        );
        assert_eq!(seen[2].0, EventType::Deleted);
        assert_eq!(seen[2].1, Bytes::from_static(b"2"));
    }

    #[tokio::test]
    async fn old_revisions_are_compacted_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RedbStoreConfig::new(dir.path().join("s.redb"));
        config.watch_window = Duration::from_millis(0);
        config.watch_min_events = 2;
        let s = RedbStore::open(config).unwrap();
        for i in 0..5 {
            s.create(format!("/k/{i}"), Bytes::new()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        s.create("/k/5".into(), Bytes::new()).await.unwrap();
        assert!(matches!(
            s.watch("/k/", 1),
            Err(StoreError::Compacted { .. })
        ));
        assert!(s.watch("/k/", 5).is_ok());
        s.close();
        let s = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
        assert!(matches!(
            s.watch("/k/", 1),
            Err(StoreError::Compacted { .. })
        ));
        assert!(s.watch("/k/", 5).is_ok());
    }
}
