//! The audit log file with kube-apiserver's rotation (its `lumberjack` logger):
//! `--audit-log-maxsize` megabytes per file (0: never rotate), then the file is renamed to
//! `<stem>-<UTC time as 2006-01-02T15-04-05.000><.ext>` and a new one started;
//! `--audit-log-maxbackup` old files are kept (0: all) and `--audit-log-maxage` days (0: no
//! limit), the age read from the time in the old file's name. With `--audit-log-compress`
//! each old file is gzipped to `<name>.gz` and the uncompressed one removed, on a
//! background thread after the rotation (lumberjack's mill); compressed old files count
//! towards `--audit-log-maxbackup` and `--audit-log-maxage` as the others do. Unlike
//! lumberjack, an event larger than the limit is still written (alone in a fresh file)
//! rather than dropped.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// When to rotate and what to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a write would make the file larger than this (0: never).
    pub max_bytes: u64,
    /// Old files kept, newest first (0: all).
    pub max_backups: usize,
    /// Old files older than this are removed (`None`: no age limit).
    pub max_age: Option<Duration>,
    /// Old files are gzipped (`<name>.gz`).
    pub compress: bool,
}

impl Rotation {
    /// From the flags' units: megabytes (2^20 bytes, as lumberjack), a count, days.
    pub fn from_flags(max_size_mb: u64, max_backups: usize, max_age_days: u64) -> Self {
        Rotation {
            max_bytes: max_size_mb.saturating_mul(1024 * 1024),
            max_backups,
            max_age: (max_age_days > 0).then(|| Duration::from_secs(max_age_days * 86_400)),
            compress: false,
        }
    }
}

/// An append-only file that rotates itself by size.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    /// The background pruning and compression after the last rotation (with `compress`).
    mill: Option<std::thread::JoinHandle<()>>,
}

/// The suffix of compressed old files.
const GZ: &str = ".gz";

/// lumberjack's backup time format (`2006-01-02T15-04-05.000`, UTC).
const BACKUP_TIME: &str = "%Y-%m-%dT%H-%M-%S%.3f";

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// `dir`, the name before the time and the extension after it (`audit.log`: `audit-`, `.log`).
fn name_parts(path: &Path) -> (PathBuf, String, String) {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (dir, format!("{}-", stem.unwrap_or_default()), ext)
}

impl RotatingFile {
    /// Opens (or creates) `path` for appending; its current size counts towards the limit.
    pub fn open(path: &Path, rotation: Rotation) -> io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            mill: None,
        })
    }

    /// Waits for the pruning and compression after the last rotation.
    pub fn finish(&mut self) {
        if let Some(mill) = self.mill.take() {
            let _ = mill.join();
        }
    }

    /// Appends `line` whole, rotating first when it would not fit.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let max = self.rotation.max_bytes;
        if max > 0 && self.size > 0 && self.size + line.len() as u64 > max {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let (dir, prefix, ext) = name_parts(&self.path);
        // Strictly after the newest old file, so names sort as the files were written
        // even within one millisecond (names hold milliseconds: compare at that precision).
        let now = jiff::Timestamp::now();
        let mut at = jiff::Timestamp::from_millisecond(now.as_millisecond()).unwrap_or(now);
        if let Some((newest, _)) = self.backups()?.first()
            && *newest >= at
        {
            at = *newest + jiff::SignedDuration::from_millis(1);
        }
        let backup = dir.join(format!("{prefix}{}{ext}", at.strftime(BACKUP_TIME)));
        std::fs::rename(&self.path, &backup)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        if !self.rotation.compress {
            return mill(&self.path, &self.rotation, jiff::Timestamp::now());
        }
        // One mill at a time, as lumberjack's; compressing never holds up the writer.
        self.finish();
        let (path, rotation) = (self.path.clone(), self.rotation);
        self.mill = Some(std::thread::spawn(move || {
            if let Err(e) = mill(&path, &rotation, jiff::Timestamp::now()) {
                tracing::error!(error = %e, path = %path.display(), "pruning or compressing old audit log files failed");
            }
        }));
        Ok(())
    }

    /// The old files (those named with a time), newest first.
    fn backups(&self) -> io::Result<Vec<(jiff::Timestamp, PathBuf)>> {
        backups(&self.path)
    }
}

/// The old files of `path` (named with a time, compressed or not), newest first.
fn backups(path: &Path) -> io::Result<Vec<(jiff::Timestamp, PathBuf)>> {
    let (dir, prefix, ext) = name_parts(path);
    let listing = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &dir
    };
    let mut backups: Vec<(jiff::Timestamp, PathBuf)> = std::fs::read_dir(listing)?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let name = name.strip_suffix(GZ).unwrap_or(&name);
            let time = name.strip_prefix(&prefix)?.strip_suffix(&ext)?;
            Some((backup_time(time)?, entry.path()))
        })
        .collect();
    backups.sort_by_key(|b| std::cmp::Reverse(b.0));
    Ok(backups)
}

/// lumberjack's `millRunOnce`: removes the old files beyond `max_backups` (a file and its
/// `.gz` count once) and those older than `max_age`, then compresses the rest.
fn mill(path: &Path, rotation: &Rotation, now: jiff::Timestamp) -> io::Result<()> {
    let cutoff = rotation
        .max_age
        .and_then(|age| jiff::SignedDuration::try_from(age).ok())
        .map(|age| now - age);
    let mut kept = Vec::new();
    let mut distinct = 0;
    let mut last = None;
    for (time, file) in backups(path)? {
        if last != Some(time) {
            distinct += 1;
            last = Some(time);
        }
        let too_many = rotation.max_backups > 0 && distinct > rotation.max_backups;
        let too_old = cutoff.is_some_and(|c| time < c);
        if too_many || too_old {
            std::fs::remove_file(&file)?;
        } else {
            kept.push(file);
        }
    }
    if rotation.compress {
        for file in kept {
            if !file.to_string_lossy().ends_with(GZ) {
                compress(&file)?;
            }
        }
    }
    Ok(())
}

/// Gzips `src` to `<src>.gz` (same permissions), then removes `src`; on failure the
/// partial `.gz` is removed and `src` kept.
fn compress(src: &Path) -> io::Result<()> {
    let mut dst_name = src.as_os_str().to_owned();
    dst_name.push(GZ);
    let dst = PathBuf::from(dst_name);
    let result = (|| {
        let mut input = File::open(src)?;
        let permissions = input.metadata()?.permissions();
        let out = File::create(&dst)?;
        out.set_permissions(permissions)?;
        let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        io::copy(&mut input, &mut gz)?;
        gz.finish()?.sync_all()
    })();
    match result {
        Ok(()) => std::fs::remove_file(src),
        Err(e) => {
            let _ = std::fs::remove_file(&dst);
            Err(e)
        }
    }
}

/// The time in a backup's name (`2026-12-03T07-20-00.123`), `None` for any other name.
fn backup_time(s: &str) -> Option<jiff::Timestamp> {
    let (date, clock) = s.split_once('T')?;
    let clock = clock.replacen('-', ":", 2);
    format!("{date}T{clock}Z").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backups(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "audit.log")
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_full_file_is_renamed_with_its_time_and_a_new_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation {
            max_bytes: 10,
            ..Rotation::default()
        };
        let mut f = RotatingFile::open(&path, rotation).unwrap();
        f.write_line(b"aaaa\n").unwrap();
        f.write_line(b"bbbb\n").unwrap();
        assert!(backups(dir.path()).is_empty(), "10 bytes fit");
        f.write_line(b"cccc\n").unwrap();
        let old = backups(dir.path());
        assert_eq!(old.len(), 1, "{old:?}");
        let time = old[0].strip_prefix("audit-").unwrap();
        let time = time.strip_suffix(".log").unwrap();
        assert!(backup_time(time).is_some(), "{time}");
        assert_eq!(
            std::fs::read(dir.path().join(&old[0])).unwrap(),
            b"aaaa\nbbbb\n"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"cccc\n");
    }

    #[test]
    fn only_max_backups_newest_old_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation {
            max_bytes: 5,
            max_backups: 2,
            ..Rotation::default()
        };
        let mut f = RotatingFile::open(&path, rotation).unwrap();
        for line in [b"1111\n", b"2222\n", b"3333\n", b"4444\n", b"5555\n"] {
            f.write_line(line).unwrap();
        }
        let old = backups(dir.path());
        assert_eq!(old.len(), 2, "{old:?}");
        let kept: Vec<Vec<u8>> = old
            .iter()
            .map(|n| std::fs::read(dir.path().join(n)).unwrap())
            .collect();
        assert_eq!(kept, vec![b"3333\n".to_vec(), b"4444\n".to_vec()]);
        assert_eq!(std::fs::read(&path).unwrap(), b"5555\n");
    }

    #[test]
    fn old_files_past_max_age_are_removed_by_the_time_in_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let stale = dir.path().join("audit-2020-01-01T00-00-00.000.log");
        let other = dir.path().join("audit-notatime.log");
        std::fs::write(&stale, "old\n").unwrap();
        std::fs::write(&other, "kept: not a backup name\n").unwrap();
        let mut f = RotatingFile::open(&path, Rotation::from_flags(0, 0, 30)).unwrap();
        f.rotation.max_bytes = 5;
        f.write_line(b"1111\n").unwrap();
        f.write_line(b"2222\n").unwrap();
        assert!(!stale.exists(), "a backup from 2020 is older than 30 days");
        assert!(other.exists());
        assert_eq!(backups(dir.path()).len(), 2, "{:?}", backups(dir.path()));
    }

    #[test]
    fn zero_max_size_never_rotates_and_flags_are_megabytes_and_days() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut f = RotatingFile::open(&path, Rotation::from_flags(0, 1, 1)).unwrap();
        for _ in 0..100 {
            f.write_line(b"0123456789\n").unwrap();
        }
        assert!(backups(dir.path()).is_empty());
        let r = Rotation::from_flags(100, 100, 366);
        assert_eq!(r.max_bytes, 100 * 1024 * 1024);
        assert_eq!(r.max_age, Some(Duration::from_secs(366 * 86_400)));
    }

    #[test]
    fn an_existing_file_counts_towards_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "12345678\n").unwrap();
        let rotation = Rotation {
            max_bytes: 10,
            ..Rotation::default()
        };
        let mut f = RotatingFile::open(&path, rotation).unwrap();
        f.write_line(b"abc\n").unwrap();
        assert_eq!(backups(dir.path()).len(), 1);
        assert_eq!(std::fs::read(&path).unwrap(), b"abc\n");
    }

    fn gunzip(path: &Path) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(File::open(path).unwrap())
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn compressed_backups_are_gzip_and_count_towards_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let rotation = Rotation {
            max_bytes: 5,
            max_backups: 2,
            compress: true,
            ..Rotation::default()
        };
        let mut f = RotatingFile::open(&path, rotation).unwrap();
        for line in [b"1111\n", b"2222\n", b"3333\n", b"4444\n"] {
            f.write_line(line).unwrap();
        }
        f.finish();
        let old = backups(dir.path());
        assert_eq!(old.len(), 2, "two newest kept, compressed: {old:?}");
        assert!(old.iter().all(|n| n.ends_with(".log.gz")), "{old:?}");
        let kept: Vec<Vec<u8>> = old.iter().map(|n| gunzip(&dir.path().join(n))).collect();
        assert_eq!(kept, vec![b"2222\n".to_vec(), b"3333\n".to_vec()]);
        assert_eq!(std::fs::read(&path).unwrap(), b"4444\n");
        // The time is read through the .gz suffix, so the next name still sorts after.
        let time = old[1].strip_prefix("audit-").unwrap();
        let time = time.strip_suffix(".log.gz").unwrap();
        assert!(backup_time(time).is_some(), "{time}");
    }

    #[test]
    fn a_stale_compressed_backup_is_removed_by_max_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let stale = dir.path().join("audit-2020-01-01T00-00-00.000.log.gz");
        std::fs::write(&stale, "not read").unwrap();
        let mut rotation = Rotation::from_flags(0, 0, 30);
        rotation.max_bytes = 5;
        rotation.compress = true;
        let mut f = RotatingFile::open(&path, rotation).unwrap();
        f.write_line(b"1111\n").unwrap();
        f.write_line(b"2222\n").unwrap();
        f.finish();
        assert!(!stale.exists());
        let old = backups(dir.path());
        assert_eq!(old.len(), 1, "{old:?}");
        assert_eq!(gunzip(&dir.path().join(&old[0])), b"1111\n");
    }
}
