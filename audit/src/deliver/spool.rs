//! The spool: an append-only file of records waiting for the audit service.
//!
//! Layout: a 20-byte header — magic `PALSPL01`, the replay offset (u64 LE) and a
//! check of it (the first 4 bytes of its SHA-256) — then frames, each
//! `[u32 LE length][4-byte check: SHA-256 of the payload, truncated][prost-encoded
//! pb::Record]`. Frames before the replay offset are delivered; frames from it
//! on wait, oldest first.
//!
//! Writes go straight to the file (no buffer in this process), so a record
//! counted as spooled survives a crash of the sender (not of the machine: there is
//! no fsync). The replay offset is rewritten after each delivered batch; if it is
//! lost, an older offset is used and the service drops the duplicates.
//!
//! Opening scans the file: a torn or garbled tail (a crash mid-write) is cut off
//! with a warning, an offset that does not fall on a frame is moved back to the
//! frame before it, and a garbled header offset means "replay everything". The
//! file is bounded: when a record would take it past its maximum, delivered
//! frames are compacted away (a new file renamed over the old); if that is not
//! enough the record is refused. One process at a time: the file is locked.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use prost::Message;
use ring::digest::{digest, SHA256};

use crate::proto::v1 as pb;

const MAGIC: &[u8; 8] = b"PALSPL01";
/// Magic, offset, check.
pub(crate) const HEADER_BYTES: u64 = 20;
/// Length and check of a frame.
const FRAME_HEAD: u64 = 8;
/// The largest payload a frame may hold; a larger length is garbage. A record at
/// every limit of [`crate::wire`] is about 600 KiB.
const MAX_FRAME: u64 = 1024 * 1024;
/// How much of the file one compaction copies at a time.
const COPY_CHUNK: u64 = 1024 * 1024;

/// The spool could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    #[error("cannot use the audit spool `{path}`: {source}; check that its directory is writable")]
    Io { path: PathBuf, source: io::Error },
    #[error("`{path}` is not an audit spool (it does not start with the spool header); move it away or configure another spool path")]
    NotASpool { path: PathBuf },
    #[error("the audit spool `{path}` is in use by another process; give each sender its own spool path")]
    InUse { path: PathBuf },
}

/// Why the spool did not take a record.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// It would go past its maximum size.
    Full,
    /// Writing failed.
    Io(io::Error),
}

/// A run of frames from the replay offset: what a delivered batch consumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) bytes: u64,
    pub(crate) frames: u64,
}

/// Frames read from the replay offset.
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub(crate) records: Vec<pb::Record>,
    /// Everything read, the unreadable frames included.
    pub(crate) extent: Extent,
    /// Frames whose check passed but which did not decode.
    pub(crate) undecodable: u64,
}

/// An open spool file.
#[derive(Debug)]
pub(crate) struct Spool {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    /// The first frame not yet delivered.
    offset: u64,
    /// The end of the last frame.
    end: u64,
    /// Frames in `offset..end`.
    frames: u64,
}

impl Spool {
    /// Opens or creates the spool at `path` (and its directory), locks it, and
    /// finds the frames still to deliver.
    pub(crate) fn open(path: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        let failed = |source| SpoolError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let file = open_locked(path)?;
        let len = file.metadata().map_err(failed)?.len();
        let mut spool = Self {
            path: path.to_owned(),
            file,
            max_bytes,
            offset: HEADER_BYTES,
            end: HEADER_BYTES,
            frames: 0,
        };
        let mut header = [0; HEADER_BYTES as usize];
        let start = header.get_mut(..len.min(HEADER_BYTES) as usize).unwrap_or_default();
        spool.file.read_exact_at(start, 0).map_err(failed)?;
        let magic = header.get(..MAGIC.len().min(len as usize)).unwrap_or_default();
        if !MAGIC.starts_with(magic) {
            return Err(SpoolError::NotASpool { path: path.to_owned() });
        }
        if len < HEADER_BYTES {
            // Created, and the process died before the header was whole.
            spool.reset().map_err(failed)?;
            return Ok(spool);
        }
        let stored = decode_offset(&header).unwrap_or_else(|| {
            tracing::warn!(spool = %path.display(), "the audit spool's replay offset is garbled; replaying all of it (the audit service drops what it already has)");
            HEADER_BYTES
        });
        spool.scan(len, stored).map_err(failed)?;
        Ok(spool)
    }

    /// Whether every frame has been delivered.
    pub(crate) fn is_empty(&self) -> bool {
        self.offset >= self.end
    }

    /// The file's size, in bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.end
    }

    /// Frames waiting.
    pub(crate) fn frames(&self) -> u64 {
        self.frames
    }

    /// Appends one record.
    pub(crate) fn append(&mut self, record: &pb::Record) -> Result<(), Refusal> {
        let frame = frame(record);
        self.write(&frame, 1)
    }

    /// Appends all of `records` or none; what they take in the file.
    pub(crate) fn append_all(&mut self, records: &[pb::Record]) -> Result<Extent, Refusal> {
        let mut frames = Vec::new();
        for record in records {
            frames.extend_from_slice(&frame(record));
        }
        let count = u64::try_from(records.len()).unwrap_or(u64::MAX);
        self.write(&frames, count)?;
        Ok(Extent {
            bytes: len64(&frames),
            frames: count,
        })
    }

    /// Reads frames from the replay offset, at most `max_records` and (but for
    /// the first) `max_bytes`. Nothing is consumed until [`Self::advance`].
    pub(crate) fn read(&self, max_records: usize, max_bytes: u64) -> io::Result<Read> {
        let mut read = Read::default();
        let mut pos = self.offset;
        while pos < self.end && read.records.len() < max_records {
            let (len, check) = self.frame_head(pos)?;
            let size = FRAME_HEAD + u64::from(len);
            if read.extent.frames > 0 && read.extent.bytes + size > max_bytes {
                break;
            }
            let corrupt = || {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the frame at byte {pos} is corrupt"),
                )
            };
            if u64::from(len) > MAX_FRAME || pos + size > self.end {
                return Err(corrupt());
            }
            let mut payload = vec![0; len as usize];
            self.file.read_exact_at(&mut payload, pos + FRAME_HEAD)?;
            if check_of(&payload) != check {
                return Err(corrupt());
            }
            match pb::Record::decode(payload.as_slice()) {
                Ok(record) => read.records.push(record),
                Err(_) => read.undecodable += 1,
            }
            read.extent.bytes += size;
            read.extent.frames += 1;
            pos += size;
        }
        Ok(read)
    }

    /// Marks `extent` (read from the replay offset) delivered; an emptied spool
    /// is truncated to its header.
    pub(crate) fn advance(&mut self, extent: Extent) -> io::Result<()> {
        self.offset = (self.offset + extent.bytes).min(self.end);
        self.frames = self.frames.saturating_sub(extent.frames);
        if self.is_empty() {
            return self.reset();
        }
        self.file.write_all_at(&offset_field(self.offset), 8)
    }

    /// Drops every frame from the replay offset on: what is left is unreadable.
    /// Returns how many frames were lost.
    pub(crate) fn discard_rest(&mut self) -> io::Result<u64> {
        let lost = self.frames;
        self.offset = self.end;
        self.frames = 0;
        self.reset()?;
        Ok(lost)
    }

    /// Empties the file: the header alone, offset at its end.
    fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(HEADER_BYTES)?;
        self.offset = HEADER_BYTES;
        self.end = HEADER_BYTES;
        self.frames = 0;
        self.file.write_all_at(&header(HEADER_BYTES), 0)
    }

    /// Writes `bytes` (`count` frames) at the end, compacting first if they would
    /// not fit.
    fn write(&mut self, bytes: &[u8], count: u64) -> Result<(), Refusal> {
        let size = len64(bytes);
        if self.end + size > self.max_bytes && self.offset > HEADER_BYTES {
            self.compact().map_err(Refusal::Io)?;
        }
        if self.end + size > self.max_bytes {
            return Err(Refusal::Full);
        }
        if let Err(e) = self.file.write_all_at(bytes, self.end) {
            let _ = self.file.set_len(self.end);
            return Err(Refusal::Io(e));
        }
        self.end += size;
        self.frames += count;
        Ok(())
    }

    /// Rewrites the file without its delivered frames, renamed over the old one.
    fn compact(&mut self) -> io::Result<()> {
        let tmp = self.path.with_extension("compacting");
        // A leftover of a crash mid-compaction is ours to drop (the spool itself is
        // locked by this process). Then create it new: never follow a link someone
        // planted in its place, never write into a file that appeared meanwhile.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let new = OpenOptions::new()
            .read(true)
            .write(true)
            // O_CREAT|O_EXCL: fails on any existing path, a symbolic link included.
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        new.try_lock().map_err(|e| io::Error::other(e.to_string()))?;
        new.write_all_at(&header(HEADER_BYTES), 0)?;
        let mut from = self.offset;
        let mut to = HEADER_BYTES;
        let mut chunk = Vec::new();
        while from < self.end {
            let n = (self.end - from).min(COPY_CHUNK);
            chunk.resize(n as usize, 0);
            self.file.read_exact_at(&mut chunk, from)?;
            new.write_all_at(&chunk, to)?;
            from += n;
            to += n;
        }
        std::fs::rename(&tmp, &self.path)?;
        tracing::debug!(spool = %self.path.display(), delivered = self.offset - HEADER_BYTES, "audit spool compacted");
        self.file = new;
        self.end = to;
        self.offset = HEADER_BYTES;
        Ok(())
    }

    /// Finds the frames of a file of `len` bytes whose header says `stored`:
    /// cuts a torn tail, moves the offset back onto a frame.
    fn scan(&mut self, len: u64, stored: u64) -> io::Result<()> {
        let mut pos = HEADER_BYTES;
        let mut offset = HEADER_BYTES;
        let mut frames = 0;
        while pos < len {
            let Some(size) = self.whole_frame(pos, len, stored)? else {
                break;
            };
            if pos <= stored {
                offset = pos;
                frames = 0;
            }
            frames += 1;
            pos += size;
        }
        if pos <= stored {
            offset = pos;
            frames = 0;
        }
        if pos < len {
            tracing::warn!(spool = %self.path.display(), at = pos, cut = len - pos, "the audit spool ends in a torn or garbled frame (a crash while writing?); cut it off there");
            self.file.set_len(pos)?;
        }
        if offset != stored {
            tracing::warn!(spool = %self.path.display(), stored, used = offset, "the audit spool's replay offset is not on a frame; replaying from the frame before it");
        }
        self.offset = offset;
        self.end = pos;
        self.frames = frames;
        if self.is_empty() {
            return self.reset();
        }
        self.file.write_all_at(&offset_field(offset), 8)
    }

    /// The size of the whole, well-formed frame at `pos`, if there is one (its
    /// payload checked when it ends after `stored`: when it will be replayed).
    fn whole_frame(&self, pos: u64, len: u64, stored: u64) -> io::Result<Option<u64>> {
        if len - pos < FRAME_HEAD {
            return Ok(None);
        }
        let (payload_len, check) = self.frame_head(pos)?;
        let size = FRAME_HEAD + u64::from(payload_len);
        if u64::from(payload_len) > MAX_FRAME || len - pos < size {
            return Ok(None);
        }
        if pos + size > stored {
            let mut payload = vec![0; payload_len as usize];
            self.file.read_exact_at(&mut payload, pos + FRAME_HEAD)?;
            if check_of(&payload) != check {
                return Ok(None);
            }
        }
        Ok(Some(size))
    }

    fn frame_head(&self, pos: u64) -> io::Result<(u32, [u8; 4])> {
        let mut head = [0; FRAME_HEAD as usize];
        self.file.read_exact_at(&mut head, pos)?;
        let [a, b, c, d, e, f, g, h] = head;
        Ok((u32::from_le_bytes([a, b, c, d]), [e, f, g, h]))
    }
}

/// Opens `path` read-write (created owner-only) and takes its lock.
fn open_locked(path: &Path) -> Result<File, SpoolError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| SpoolError::Io {
            path: path.to_owned(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SpoolError::InUse { path: path.to_owned() }),
        Err(std::fs::TryLockError::Error(source)) => Err(SpoolError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// One frame holding `record`.
fn frame(record: &pb::Record) -> Vec<u8> {
    let payload = record.encode_to_vec();
    let mut frame = Vec::with_capacity(payload.len() + FRAME_HEAD as usize);
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_le_bytes());
    frame.extend_from_slice(&check_of(&payload));
    frame.extend_from_slice(&payload);
    frame
}

/// How many bytes `record` takes in the spool.
pub(crate) fn frame_size(record: &pb::Record) -> u64 {
    FRAME_HEAD + u64::try_from(record.encoded_len()).unwrap_or(u64::MAX)
}

fn check_of(bytes: &[u8]) -> [u8; 4] {
    let hash = digest(&SHA256, bytes);
    match hash.as_ref() {
        [a, b, c, d, ..] => [*a, *b, *c, *d],
        _ => [0; 4],
    }
}

fn header(offset: u64) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&offset_field(offset));
    header
}

/// The offset and its check, as the header holds them from byte 8.
fn offset_field(offset: u64) -> [u8; 12] {
    let bytes = offset.to_le_bytes();
    let [a, b, c, d, e, f, g, h] = bytes;
    let [w, x, y, z] = check_of(&bytes);
    [a, b, c, d, e, f, g, h, w, x, y, z]
}

fn decode_offset(header: &[u8; HEADER_BYTES as usize]) -> Option<u64> {
    let [_, _, _, _, _, _, _, _, a, b, c, d, e, f, g, h, w, x, y, z] = *header;
    let bytes = [a, b, c, d, e, f, g, h];
    (check_of(&bytes) == [w, x, y, z]).then(|| u64::from_le_bytes(bytes))
}

fn len64(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.len()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u64) -> pb::Record {
        pb::Record {
            id: format!("r-{n}"),
            time_unix_micros: 1,
            event: Some(pb::record::Event::Policy(pb::PolicyChange {
                outcome: pb::PolicyOutcome::Accepted.into(),
                version: n,
                digest: "sha256:00".into(),
                detail: String::new(),
            })),
        }
    }

    fn versions(read: &Read) -> Vec<u64> {
        let version = |r: &pb::Record| match &r.event {
            Some(pb::record::Event::Policy(p)) => p.version,
            _ => unreachable!(),
        };
        read.records.iter().map(version).collect()
    }

    fn spool_of(dir: &tempfile::TempDir, count: u64) -> (PathBuf, Spool) {
        let path = dir.path().join("deep/er/audit.spool");
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        for n in 0..count {
            spool.append(&record(n)).unwrap();
        }
        (path, spool)
    }

    #[test]
    fn records_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (path, spool) = spool_of(&dir, 5);
        assert_eq!(versions(&spool.read(10, u64::MAX).unwrap()), [0, 1, 2, 3, 4]);
        drop(spool);
        let spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(spool.frames(), 5);
        assert_eq!(versions(&spool.read(3, u64::MAX).unwrap()), [0, 1, 2]);
    }

    #[test]
    fn delivered_frames_are_not_replayed_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut spool) = spool_of(&dir, 5);
        let first = spool.read(2, u64::MAX).unwrap();
        spool.advance(first.extent).unwrap();
        drop(spool);
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        let rest = spool.read(10, u64::MAX).unwrap();
        assert_eq!(versions(&rest), [2, 3, 4]);
        spool.advance(rest.extent).unwrap();
        assert!(spool.is_empty());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            HEADER_BYTES,
            "emptied means truncated"
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_frames_before_it_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (path, spool) = spool_of(&dir, 3);
        drop(spool);
        let whole = std::fs::metadata(&path).unwrap().len();
        let torn = frame(&record(3));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&torn[..torn.len() - 2]);
        std::fs::write(&path, bytes).unwrap();
        let spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(versions(&spool.read(10, u64::MAX).unwrap()), [0, 1, 2]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
    }

    #[test]
    fn a_garbled_last_frame_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (path, spool) = spool_of(&dir, 3);
        drop(spool);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(versions(&spool.read(10, u64::MAX).unwrap()), [0, 1]);
    }

    #[test]
    fn a_garbled_offset_replays_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut spool) = spool_of(&dir, 3);
        let first = spool.read(1, u64::MAX).unwrap();
        spool.advance(first.extent).unwrap();
        drop(spool);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let spool = Spool::open(&path, 1 << 20).unwrap();
        assert_eq!(versions(&spool.read(10, u64::MAX).unwrap()), [0, 1, 2]);
    }

    #[test]
    fn another_file_is_not_taken_for_a_spool_and_a_spool_has_one_user() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, "not a spool at all, just text").unwrap();
        assert!(matches!(
            Spool::open(&other, 1 << 20),
            Err(SpoolError::NotASpool { .. })
        ));
        let (path, _spool) = spool_of(&dir, 1);
        assert!(matches!(Spool::open(&path, 1 << 20), Err(SpoolError::InUse { .. })));
    }

    #[test]
    fn a_full_spool_refuses_and_compaction_makes_room_from_delivered_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.spool");
        let max = HEADER_BYTES + 4 * frame_size(&record(1));
        let mut spool = Spool::open(&path, max).unwrap();
        for n in 1..4 {
            spool.append(&record(n)).unwrap();
        }
        spool.append(&record(9)).unwrap();
        assert!(matches!(spool.append(&record(4)), Err(Refusal::Full)));
        let two = spool.read(2, u64::MAX).unwrap();
        spool.advance(two.extent).unwrap();
        spool.append(&record(4)).unwrap();
        spool.append(&record(5)).unwrap();
        assert_eq!(spool.bytes(), max);
        assert!(matches!(spool.append_all(&[record(6)]), Err(Refusal::Full)));
        assert_eq!(versions(&spool.read(10, u64::MAX).unwrap()), [3, 9, 4, 5]);
        drop(spool);
        let spool = Spool::open(&path, max).unwrap();
        assert_eq!(
            versions(&spool.read(10, u64::MAX).unwrap()),
            [3, 9, 4, 5],
            "the compacted file reopens"
        );
    }

    #[test]
    fn compaction_never_writes_through_a_link_planted_in_its_way() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.spool");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, path.with_extension("compacting")).unwrap();
        let max = HEADER_BYTES + 2 * frame_size(&record(1));
        let mut spool = Spool::open(&path, max).unwrap();
        spool.append(&record(1)).unwrap();
        spool.append(&record(2)).unwrap();
        let one = spool.read(1, u64::MAX).unwrap();
        spool.advance(one.extent).unwrap();
        spool.append(&record(3)).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(versions(&spool.read(10, u64::MAX).unwrap()), [2, 3]);
    }
}
