//! The audit log file with kube-apiserver's rotation (its `lumberjack` logger):
//! `--audit-log-maxsize` megabytes per file (0: never rotate), then the file is renamed to
//! `<stem>-<UTC time as 2006-01-02T15-04-05.000><.ext>` and a new one started;
//! `--audit-log-maxbackup` old files are kept (0: all) and `--audit-log-maxage` days (0: no
//! limit), the age read from the time in the old file's name. Unlike lumberjack, an event
//! larger than the limit is still written (alone in a fresh file) rather than dropped.

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
}

impl Rotation {
    /// From the flags' units: megabytes (2^20 bytes, as lumberjack), a count, days.
    pub fn from_flags(max_size_mb: u64, max_backups: usize, max_age_days: u64) -> Self {
        Rotation {
            max_bytes: max_size_mb.saturating_mul(1024 * 1024),
            max_backups,
            max_age: (max_age_days > 0).then(|| Duration::from_secs(max_age_days * 86_400)),
        }
    }
}

/// An append-only file that rotates itself by size.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
}

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
        })
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
        self.prune(jiff::Timestamp::now())
    }

    /// The old files (those named with a time), newest first.
    fn backups(&self) -> io::Result<Vec<(jiff::Timestamp, PathBuf)>> {
        let (dir, prefix, ext) = name_parts(&self.path);
        let listing = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &dir
        };
        let mut backups: Vec<(jiff::Timestamp, PathBuf)> = std::fs::read_dir(listing)?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let name = entry.file_name().into_string().ok()?;
                let time = name.strip_prefix(&prefix)?.strip_suffix(&ext)?;
                Some((backup_time(time)?, entry.path()))
            })
            .collect();
        backups.sort_by_key(|b| std::cmp::Reverse(b.0));
        Ok(backups)
    }

    /// Removes the old files beyond `max_backups` and those older than `max_age`.
    fn prune(&self, now: jiff::Timestamp) -> io::Result<()> {
        let cutoff = self
            .rotation
            .max_age
            .and_then(|age| jiff::SignedDuration::try_from(age).ok())
            .map(|age| now - age);
        for (i, (time, path)) in self.backups()?.iter().enumerate() {
            let too_many = self.rotation.max_backups > 0 && i >= self.rotation.max_backups;
            let too_old = cutoff.is_some_and(|c| *time < c);
            if too_many || too_old {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
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
            max_age: None,
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
}
