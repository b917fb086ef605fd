//! A bounded, ordered, on-disk queue of records waiting for the collector.
//!
//! Layout: `segment-<first sequence>.jsonl` files of JSON lines
//! (`{"seq":N,"record":...}`), appended to the newest; `acked` holds the
//! highest sequence the collector acknowledged. A record is read, sent,
//! acknowledged (the `acked` file replaced atomically), and only then may
//! its segment be deleted: ack before delete, so a crash at any point
//! re-sends at most the batch in flight and loses nothing.
//!
//! Durability: every append is one `write(2)`, so a crash or kill of the
//! agent loses nothing that was accepted; the newest segment is
//! `fdatasync`ed by [`Spool::sync`], which the sender calls at most every
//! [`SYNC_EVERY`] and at shutdown, so a power loss can cost the last
//! fraction of a second. A torn last line (power loss mid-write) is cut
//! off on open.
//!
//! Bound: the segments' total size never exceeds `max_bytes`; an append
//! that would is refused ([`SpoolError::Full`]) and the caller counts it.
//! When everything is acknowledged the newest segment is rolled, so all
//! space comes back.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::otlp::record::OtlpRecord;

/// The smallest spool worth having.
pub const MIN_BYTES: u64 = 64 * 1024;
/// How often the sender makes appended records durable.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full: {needed} bytes needed, {free} free of {max}")]
    Full { needed: u64, free: u64, max: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is in use by another eastwatch")]
    Locked(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Serialize, Deserialize)]
struct Line<R> {
    seq: u64,
    record: R,
}

struct Segment {
    first_seq: u64,
    path: PathBuf,
    size: u64,
    /// Highest sequence in it; 0 when empty.
    last_seq: u64,
}

/// Where the first unacknowledged record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    segment: u64,
    offset: u64,
}

/// A record read back, with where the next one starts.
pub struct Spooled {
    pub seq: u64,
    pub record: OtlpRecord,
    next: Position,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    active: File,
    next_seq: u64,
    acked: u64,
    read: Position,
    bytes: u64,
    dirty: bool,
    _lock: Flock<File>,
}

fn segment_name(first_seq: u64) -> String {
    format!("segment-{first_seq:020}.jsonl")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// Replaces `path` with `bytes` atomically and durably: a temporary file
/// created exclusively (a planted symlink is never written through),
/// renamed into place, the directory synced.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    eastwatch_policy::file::write_atomic(path, bytes).map_err(|e| SpoolError::Io {
        path: e.path,
        source: e.source,
    })
}

/// Opens files of the spool without following a symlink at their name.
fn no_follow() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(libc::O_NOFOLLOW);
    options
}

/// The last sequence number the collector acknowledged (0: none).
fn read_acked(dir: &Path) -> Result<u64, SpoolError> {
    let path = dir.join("acked");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(&path)(e)),
    }
}

/// The segments a previous run left, oldest first; where reading resumes
/// (the first record after `acked`), and the last sequence number used.
fn recover_segments(
    dir: &Path,
    acked: u64,
) -> Result<(VecDeque<Segment>, Option<Position>, u64), SpoolError> {
    let mut firsts: Vec<u64> = fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| parse_segment_name(&entry.file_name().to_string_lossy()))
        .collect();
    firsts.sort_unstable();
    let mut segments = VecDeque::new();
    let mut read = None;
    let mut last_seq = acked;
    for first_seq in firsts {
        let path = dir.join(segment_name(first_seq));
        let (size, seg_last, first_unacked) = recover_segment(&path, acked)?;
        if read.is_none()
            && let Some(offset) = first_unacked
        {
            read = Some(Position {
                segment: first_seq,
                offset,
            });
        }
        last_seq = last_seq.max(seg_last);
        segments.push_back(Segment {
            first_seq,
            path,
            size,
            last_seq: seg_last,
        });
    }
    Ok((segments, read, last_seq))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what a previous
    /// run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join("lock");
        let lock_file = no_follow()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| SpoolError::Locked(dir.to_owned()))?;
        let acked = read_acked(dir)?;
        let (segments, read, last_seq) = recover_segments(dir, acked)?;
        let next_seq = last_seq + 1;
        let mut spool = Self {
            dir: dir.to_owned(),
            max_bytes,
            segment_bytes: (max_bytes / 8).max(MIN_BYTES / 4),
            bytes: segments.iter().map(|s| s.size).sum(),
            active: File::open(&lock_path).map_err(io(&lock_path))?,
            segments,
            next_seq,
            acked,
            read: Position {
                segment: next_seq,
                offset: 0,
            },
            dirty: false,
            _lock: lock,
        };
        spool.resume(read)?;
        spool.collect()?;
        Ok(spool)
    }

    /// Appends from where the last run stopped, reading from `read`; a
    /// fresh segment when everything was acknowledged (or nothing there).
    fn resume(&mut self, read: Option<Position>) -> Result<(), SpoolError> {
        let Some(position) = read else {
            return self.roll();
        };
        self.read = position;
        let (path, size) = self
            .segments
            .back()
            .map(|s| (s.path.clone(), s.size))
            .unwrap_or_default();
        self.active = no_follow().append(true).open(&path).map_err(io(&path))?;
        if size >= self.segment_bytes {
            self.roll()?;
        }
        Ok(())
    }

    /// Records waiting (appended, not yet acknowledged).
    pub fn pending(&self) -> u64 {
        self.next_seq - 1 - self.acked
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether `bytes` more would fit.
    pub fn fits(&self, bytes: u64) -> bool {
        self.bytes + bytes <= self.max_bytes
    }

    /// The encoded size of a record on disk.
    pub fn encoded_len(record: &OtlpRecord) -> u64 {
        serde_json::to_vec(&Line { seq: 0, record })
            .map(|v| v.len() as u64 + 24)
            .unwrap_or(u64::MAX)
    }

    /// Appends a record; its sequence number comes back.
    pub fn append(&mut self, record: &OtlpRecord) -> Result<u64, SpoolError> {
        let seq = self.next_seq;
        let mut line = serde_json::to_vec(&Line { seq, record }).map_err(|e| SpoolError::Io {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        line.push(b'\n');
        let len = line.len() as u64;
        if !self.fits(len) {
            return Err(SpoolError::Full {
                needed: len,
                free: self.max_bytes.saturating_sub(self.bytes),
                max: self.max_bytes,
            });
        }
        if self
            .segments
            .back()
            .is_some_and(|s| s.size > 0 && s.size + len > self.segment_bytes)
        {
            self.roll()?;
        }
        let Some(segment) = self.segments.back_mut() else {
            return Err(SpoolError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other("no active segment"),
            });
        };
        if let Err(source) = self.active.write_all(&line) {
            // Cut a partial line so the file stays whole.
            let _ = self.active.set_len(segment.size);
            return Err(SpoolError::Io {
                path: segment.path.clone(),
                source,
            });
        }
        segment.size += len;
        segment.last_seq = seq;
        self.bytes += len;
        self.next_seq += 1;
        self.dirty = true;
        Ok(seq)
    }

    /// A sequence number for a record kept outside the spool (in memory,
    /// while the disk fails), so the collector still sees them in order.
    pub fn reserve_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Makes every appended record durable (fdatasync of the newest
    /// segment; older ones were synced when they were rolled).
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if self.dirty {
            self.active.sync_data().map_err(io(&self.dir))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Up to `max` records after the last acknowledged one, in order.
    pub fn peek(&self, max: usize) -> Result<Vec<Spooled>, SpoolError> {
        let mut out = Vec::new();
        let mut position = self.read;
        for segment in self
            .segments
            .iter()
            .filter(|s| s.first_seq >= self.read.segment)
        {
            if out.len() >= max {
                break;
            }
            if segment.first_seq != position.segment {
                position = Position {
                    segment: segment.first_seq,
                    offset: 0,
                };
            }
            if position.offset >= segment.size {
                continue;
            }
            let mut file = File::open(&segment.path).map_err(io(&segment.path))?;
            file.seek(SeekFrom::Start(position.offset))
                .map_err(io(&segment.path))?;
            let mut reader = BufReader::new(file.take(segment.size - position.offset));
            let mut line = String::new();
            while out.len() < max {
                line.clear();
                let n = reader.read_line(&mut line).map_err(io(&segment.path))?;
                if n == 0 {
                    break;
                }
                position.offset += n as u64;
                match serde_json::from_str::<Line<OtlpRecord>>(&line) {
                    Ok(parsed) if parsed.seq > self.acked => out.push(Spooled {
                        seq: parsed.seq,
                        record: parsed.record,
                        next: position,
                    }),
                    Ok(_) => {}
                    Err(err) => {
                        // Checked on open; only a foreign edit gets here.
                        warn!(file = %segment.path.display(), %err, "unreadable spool line skipped");
                    }
                }
            }
        }
        Ok(out)
    }

    /// The collector has `up_to` (inclusive, as read by [`Spool::peek`]).
    pub fn ack(&mut self, up_to: &Spooled) -> Result<(), SpoolError> {
        if up_to.seq <= self.acked {
            return Ok(());
        }
        // Advanced in memory even when the record of it cannot be written
        // (a full disk): the batch is never sent again in this run, and
        // deleting what is acknowledged frees the disk. After a restart it
        // may be sent once more (at least once, never lost).
        let written = write_atomic(&self.dir.join("acked"), up_to.seq.to_string().as_bytes());
        self.acked = up_to.seq;
        self.read = up_to.next;
        let rolled = if self.pending() == 0 {
            self.roll()
        } else {
            Ok(())
        };
        let collected = self.collect();
        written.and(rolled).and(collected)
    }

    /// The collector has records kept in memory up to `seq` (numbered by
    /// [`Spool::reserve_seq`]); the spool holds nothing older unsent.
    pub fn ack_reserved(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.acked {
            return Ok(());
        }
        self.acked = seq;
        write_atomic(&self.dir.join("acked"), seq.to_string().as_bytes())
    }

    /// Starts a new segment (the previous one synced first).
    fn roll(&mut self) -> Result<(), SpoolError> {
        self.sync()?;
        let first_seq = self.next_seq;
        let path = self.dir.join(segment_name(first_seq));
        self.active = no_follow()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        if self
            .segments
            .back()
            .is_some_and(|s| s.first_seq == first_seq)
        {
            // Already the newest, and empty.
            return Ok(());
        }
        let size = self.active.metadata().map_err(io(&path))?.len();
        self.bytes += size;
        self.segments.push_back(Segment {
            first_seq,
            path,
            size,
            last_seq: 0,
        });
        if self.pending() == 0 {
            self.read = Position {
                segment: first_seq,
                offset: 0,
            };
        }
        // The new name must survive a crash, or records in it would be lost.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Deletes segments every record of which is acknowledged (never the
    /// newest).
    fn collect(&mut self) -> Result<(), SpoolError> {
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else {
                break;
            };
            let done = oldest.first_seq < self.read.segment
                && (oldest.last_seq == 0 || oldest.last_seq <= self.acked);
            if !done {
                break;
            }
            match fs::remove_file(&oldest.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&oldest.path)(e)),
            }
            self.bytes -= oldest.size;
            self.segments.pop_front();
        }
        Ok(())
    }
}

/// Reads a segment left by a previous run: cuts a torn tail, returns its
/// size, last sequence and the offset of its first record after `acked`.
fn recover_segment(path: &Path, acked: u64) -> Result<(u64, u64, Option<u64>), SpoolError> {
    let file = File::open(path).map_err(io(path))?;
    let mut reader = BufReader::new(file);
    let mut offset = 0u64;
    let mut last = 0u64;
    let mut first_unacked = None;
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(io(path))?;
        if n == 0 {
            break;
        }
        let whole = line.ends_with('\n');
        match serde_json::from_str::<Line<serde_json::Value>>(line.trim_end()) {
            Ok(parsed) if whole => {
                if parsed.seq > acked && first_unacked.is_none() {
                    first_unacked = Some(offset);
                }
                last = last.max(parsed.seq);
                offset += n as u64;
            }
            _ => {
                warn!(
                    file = %path.display(),
                    offset,
                    "spool segment ends in a torn record; cutting it off"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io(path))?;
                file.set_len(offset).map_err(io(path))?;
                file.sync_all().map_err(io(path))?;
                break;
            }
        }
    }
    Ok((offset, last, first_unacked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eastwatch_policy::alert::{AlertKind, Severity};

    fn record(n: u64) -> OtlpRecord {
        OtlpRecord {
            kind: AlertKind::UnauthorizedFlow,
            severity: Severity::Medium,
            time_unix_nano: n,
            observed_unix_nano: n,
            body: format!("alert {n} {}", "x".repeat(200)),
            attributes: Vec::new(),
        }
    }

    fn bodies(spool: &Spool) -> Vec<u64> {
        spool
            .peek(usize::MAX)
            .unwrap()
            .iter()
            .map(|s| s.record.time_unix_nano)
            .collect()
    }

    fn segments(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("segment-")
            })
            .count()
    }

    #[test]
    fn records_come_back_in_order_and_leave_only_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), MIN_BYTES).unwrap();
        for n in 1..=100 {
            assert_eq!(spool.append(&record(n)).unwrap(), n);
        }
        assert!(segments(dir.path()) > 1, "small segments roll");
        let batch = spool.peek(10).unwrap();
        assert_eq!(batch.len(), 10);
        // Not acknowledged: the same batch again.
        assert_eq!(spool.peek(10).unwrap()[0].seq, 1);
        spool.ack(&batch[9]).unwrap();
        assert_eq!(spool.peek(1).unwrap()[0].seq, 11);
        assert_eq!(spool.pending(), 90);
        let rest = spool.peek(usize::MAX).unwrap();
        assert_eq!(rest.len(), 90);
        spool.ack(rest.last().unwrap()).unwrap();
        assert_eq!(spool.pending(), 0);
        assert_eq!(segments(dir.path()), 1, "acknowledged segments are deleted");
        assert_eq!(spool.bytes(), 0, "all room comes back");
    }

    /// A symlink planted where the acknowledgement's temporary file used
    /// to go (`acked.tmp`) or at the lock is never written through.
    #[test]
    fn planted_symlinks_in_the_spool_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        fs::create_dir(&spool_dir).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, spool_dir.join("acked.tmp")).unwrap();
        let mut spool = Spool::open(&spool_dir, MIN_BYTES).unwrap();
        spool.append(&record(1)).unwrap();
        let batch = spool.peek(1).unwrap();
        spool.ack(&batch[0]).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(spool_dir.join("acked")).unwrap(), "1");
        drop(spool);
        let locked = dir.path().join("locked");
        fs::create_dir(&locked).unwrap();
        std::os::unix::fs::symlink(&victim, locked.join("lock")).unwrap();
        assert!(
            Spool::open(&locked, MIN_BYTES).is_err(),
            "a symlinked lock is refused"
        );
    }

    #[test]
    fn a_restart_resumes_after_the_last_acknowledged_record() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), MIN_BYTES).unwrap();
            for n in 1..=50 {
                spool.append(&record(n)).unwrap();
            }
            let batch = spool.peek(20).unwrap();
            spool.ack(&batch[19]).unwrap();
            spool.sync().unwrap();
        }
        let mut spool = Spool::open(dir.path(), MIN_BYTES).unwrap();
        assert_eq!(bodies(&spool), (21..=50).collect::<Vec<_>>());
        assert_eq!(spool.append(&record(51)).unwrap(), 51);
        assert_eq!(spool.pending(), 31);
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), MIN_BYTES).unwrap();
            for n in 1..=3 {
                spool.append(&record(n)).unwrap();
            }
        }
        let newest = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("segment-"))
            .max()
            .unwrap();
        let mut file = OpenOptions::new().append(true).open(&newest).unwrap();
        file.write_all(b"{\"seq\":4,\"record\":{\"ki").unwrap();
        let mut spool = Spool::open(dir.path(), MIN_BYTES).unwrap();
        assert_eq!(bodies(&spool), vec![1, 2, 3]);
        assert_eq!(spool.append(&record(4)).unwrap(), 4);
        assert_eq!(bodies(&spool), vec![1, 2, 3, 4]);
    }

    #[test]
    fn the_bound_holds_and_room_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), MIN_BYTES).unwrap();
        let mut accepted = 0;
        let mut refused = 0;
        for n in 1..=1000 {
            match spool.append(&record(n)) {
                Ok(_) => accepted += 1,
                Err(SpoolError::Full { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            }
            assert!(spool.bytes() <= MIN_BYTES);
        }
        assert!(accepted > 100 && refused > 0, "{accepted} {refused}");
        let all = spool.peek(usize::MAX).unwrap();
        spool.ack(all.last().unwrap()).unwrap();
        assert!(spool.append(&record(1001)).is_ok());
    }

    #[test]
    fn one_spool_one_agent() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path(), MIN_BYTES).unwrap();
        assert!(matches!(
            Spool::open(dir.path(), MIN_BYTES),
            Err(SpoolError::Locked(_))
        ));
    }
}
