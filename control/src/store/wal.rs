//! The write-ahead log of the redb backend: where a batch of writes becomes durable.
//!
//! A durable redb commit rewrites a dozen B-tree and allocator pages scattered over the file
//! and flushes them all; appending one record to a log and flushing that is the least a durable
//! write can cost. So the committer appends each batch here (one `fdatasync`), applies it to
//! redb without flushing, and every so often makes redb durable in one commit (a
//! *checkpoint*), after which the log starts over. After a crash, the records written since the
//! last checkpoint are replayed into redb. etcd's WAL and PostgreSQL's do the same.
//!
//! The log is one file of fixed size, written with zeros when it is created, so that later
//! writes overwrite blocks that already exist and a flush does not also commit a change of the
//! file's size or block map. A record is `[length u32][crc32 u32][epoch u64][payload]`; the
//! checksum covers the epoch and the payload. Every checkpoint starts a new *epoch*, stored in
//! redb with the checkpoint, and the log restarts at offset 0: replay reads records from the
//! start while they are whole, their checksum holds and they carry the current epoch, so a torn
//! last write and the leftovers of an older epoch are never replayed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const HEADER: usize = 16;

/// The log file.
#[derive(Debug)]
pub struct Wal {
    file: File,
    capacity: u64,
    offset: u64,
    epoch: u64,
}

impl Wal {
    /// Opens the log at `path` (creating it, `capacity` bytes of zeros, if missing) and returns
    /// it with the payloads of the records of `epoch`, in order. New records are appended after
    /// them.
    pub fn open(path: &Path, capacity: u64, epoch: u64) -> std::io::Result<(Wal, Vec<Vec<u8>>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if len < capacity {
            // Fill with real zeros (not a hole or an unwritten extent), once per data dir.
            file.seek(SeekFrom::Start(len))?;
            let zeros = vec![0u8; 1 << 20];
            let mut left = capacity - len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let capacity = capacity.max(len);
        // Record by record, so that opening holds no more memory than the records themselves
        // (a whole-file buffer stayed in the allocator's cache of an idle `flotilla up`).
        file.seek(SeekFrom::Start(0))?;
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, &file);
        let mut records = Vec::new();
        let mut offset = 0u64;
        while let Some(payload) = read_record(&mut reader, capacity - offset, epoch)? {
            offset += (HEADER + payload.len()) as u64;
            records.push(payload);
        }
        Ok((
            Wal {
                file,
                capacity,
                offset,
                epoch,
            },
            records,
        ))
    }

    /// Whether a record of `payload_len` bytes fits in what is left of the file.
    pub fn fits(&self, payload_len: usize) -> bool {
        self.offset + (HEADER + payload_len) as u64 <= self.capacity
    }

    /// Bytes written since the last [`Wal::restart`].
    pub fn used(&self) -> u64 {
        self.offset
    }

    /// The file's size.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Appends one record and flushes it: durable when this returns `Ok`. The caller checks
    /// [`Wal::fits`] first; a record that does not fit is an error.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        if !self.fits(payload.len()) {
            return Err(std::io::Error::other("write-ahead log record does not fit"));
        }
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&checksum(self.epoch, payload).to_le_bytes());
        record.extend_from_slice(&self.epoch.to_le_bytes());
        record.extend_from_slice(payload);
        self.file.write_all_at(&record, self.offset)?;
        self.file.sync_data()?;
        self.offset += record.len() as u64;
        Ok(())
    }

    /// Starts the log over in `epoch` (after a checkpoint made everything in it durable
    /// elsewhere): the old records stay in the file but are never replayed again.
    pub fn restart(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.offset = 0;
    }
}

fn checksum(epoch: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&epoch.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The payload of the next record from `reader`, if that record is whole within the `left`
/// bytes of the log, of `epoch`, and its checksum holds.
fn read_record(reader: &mut impl Read, left: u64, epoch: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; HEADER];
    if !read_whole(reader, &mut header)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let rec_epoch = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if len == 0 || rec_epoch != epoch || len > left.saturating_sub(HEADER as u64) {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    if !read_whole(reader, &mut payload)? {
        return Ok(None);
    }
    Ok((checksum(rec_epoch, &payload) == crc).then_some(payload))
}

/// Fills `buf` from `reader`: false if the file ends first.
fn read_whole(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: u64 = 64 * 1024;

    fn reopen(path: &Path, epoch: u64) -> Vec<Vec<u8>> {
        Wal::open(path, CAP, epoch).unwrap().1
    }

    #[test]
    fn records_of_the_current_epoch_are_replayed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, replay) = Wal::open(&path, CAP, 7).unwrap();
        assert!(replay.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), CAP);
        wal.append(b"one").unwrap();
        wal.append(b"two").unwrap();
        drop(wal);
        assert_eq!(reopen(&path, 7), vec![b"one".to_vec(), b"two".to_vec()]);
        // Another epoch's records are not replayed.
        assert!(reopen(&path, 8).is_empty());
    }

    #[test]
    fn appends_continue_after_the_replayed_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, CAP, 1).unwrap();
        wal.append(b"a").unwrap();
        drop(wal);
        let (mut wal, replay) = Wal::open(&path, CAP, 1).unwrap();
        assert_eq!(replay.len(), 1);
        wal.append(b"b").unwrap();
        drop(wal);
        assert_eq!(reopen(&path, 1), vec![b"a".to_vec(), b"b".to_vec()]);
    }

    #[test]
    fn a_restart_hides_the_older_epoch_behind_the_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, CAP, 1).unwrap();
        for r in [b"old-1", b"old-2", b"old-3"] {
            wal.append(r).unwrap();
        }
        wal.restart(2);
        wal.append(b"new").unwrap();
        drop(wal);
        assert_eq!(reopen(&path, 2), vec![b"new".to_vec()]);
    }

    #[test]
    fn a_torn_or_corrupt_record_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, CAP, 1).unwrap();
        wal.append(b"whole").unwrap();
        wal.append(b"torn-record").unwrap();
        wal.append(b"after").unwrap();
        drop(wal);
        // Flip one byte of the second record's payload.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 5 + HEADER + 2] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(reopen(&path, 1), vec![b"whole".to_vec()]);
    }

    #[test]
    fn a_record_that_does_not_fit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, CAP, 1).unwrap();
        let big = vec![1u8; CAP as usize];
        assert!(!wal.fits(big.len()));
        assert!(wal.append(&big).is_err());
        assert_eq!(wal.used(), 0);
        assert!(wal.fits(CAP as usize - HEADER));
    }
}
