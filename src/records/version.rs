//! DataRecord resourceVersions: what they look like and how a requested one is judged.
//!
//! Records held in memory (the file, embedded and computed sources, and any cache) are
//! versioned by one counter per process, so a version only means something to the
//! process that handed it out. Each process therefore picks a random **epoch** at
//! start-up and every resourceVersion it serves is `<epoch>.<seq>`: 12 lowercase hex
//! digits, a dot, and the decimal counter (e.g. `3f9a0c6e21b4.17`). Clients treat it
//! as an opaque string (as every Kubernetes client must).
//!
//! A requested resourceVersion (`?resourceVersion=` on a list or watch) is judged as
//! kube-apiserver judges one it cannot serve, so that a client relists instead of
//! silently missing events:
//! - `0` (or none): any state is fine, the current one is served;
//! - this process's epoch, a counter not above the current one: served (a watch replays
//!   the events after it, or gets 410 `Expired` once they left the history);
//! - this process's epoch, a counter above the current one (from the future): 504
//!   `Timeout` with the cause `ResourceVersionTooLarge`, as kube-apiserver's
//!   `NewTooLargeResourceVersionError`;
//! - another epoch (another replica, before a restart) or a bare integer (this server
//!   before epochs, or another store's version): 410 `Expired` "too old resource version";
//! - anything else: 400 `BadRequest`.
//!
//! See `docs/datarecords.md` for how sources with durable versions (the PostgreSQL
//! table source's change-log id) extend this form.

use std::fmt;

use crate::api::status::{ApiError, StatusCause, StatusDetails};

/// The per-process epoch that prefixes every in-memory resourceVersion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Epoch(u64);

/// Number of hex digits of an epoch (48 random bits).
const EPOCH_DIGITS: usize = 12;

impl Epoch {
    /// A new random epoch.
    pub fn random() -> Self {
        Epoch(rand::random::<u64>() & ((1 << (EPOCH_DIGITS * 4)) - 1))
    }

    /// A fixed epoch (tests).
    pub fn from_raw(raw: u64) -> Self {
        Epoch(raw & ((1 << (EPOCH_DIGITS * 4)) - 1))
    }

    /// The resourceVersion of counter value `seq` in this epoch.
    pub fn version(self, seq: u64) -> String {
        format!("{self}.{seq}")
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$x}", self.0, width = EPOCH_DIGITS)
    }
}

/// A requested resourceVersion, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requested {
    /// `0`: any state.
    Any,
    /// `<epoch>.<seq>`.
    At {
        /// The epoch it was handed out in.
        epoch: Epoch,
        /// The counter value.
        seq: u64,
    },
    /// A bare integer: a version of some other store (kube-apiserver's etcd revision,
    /// this server before epochs, a future durable source).
    Foreign(u64),
}

/// Parses a requested resourceVersion; a 400 `BadRequest` when it has neither form.
pub fn parse(rv: &str) -> Result<Requested, ApiError> {
    if rv == "0" {
        return Ok(Requested::Any);
    }
    let invalid = || {
        ApiError::bad_request(format!(
            "invalid resource version {rv:?}: expected a resourceVersion this server handed out"
        ))
    };
    if let Some((epoch, seq)) = rv.split_once('.') {
        if epoch.len() != EPOCH_DIGITS
            || !epoch
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            || seq.is_empty()
            || !seq.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(invalid());
        }
        let epoch = u64::from_str_radix(epoch, 16).map_err(|_| invalid())?;
        let seq = seq.parse().map_err(|_| invalid())?;
        return Ok(Requested::At {
            epoch: Epoch(epoch),
            seq,
        });
    }
    if !rv.is_empty() && rv.bytes().all(|b| b.is_ascii_digit()) {
        return rv.parse().map(Requested::Foreign).map_err(|_| invalid());
    }
    Err(invalid())
}

/// Where a requested resourceVersion stands against this process's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// Any state will do (`0`).
    Any,
    /// A counter value of this process, not above the current one.
    Known(u64),
}

/// Judges `rv` against this process's `epoch` and current counter `current`.
pub fn judge(rv: &str, epoch: Epoch, current: u64) -> Result<Position, ApiError> {
    match parse(rv)? {
        Requested::Any => Ok(Position::Any),
        Requested::At { epoch: e, seq } if e == epoch => {
            if seq > current {
                Err(too_large(rv, &epoch.version(current)))
            } else {
                Ok(Position::Known(seq))
            }
        }
        Requested::At { .. } | Requested::Foreign(_) => Err(expired(rv, &epoch.version(current))),
    }
}

/// 410 `Expired` as kube-apiserver's watch cache words it for a version it no longer has.
pub fn expired(rv: &str, current: &str) -> ApiError {
    ApiError::resource_version_expired(format!("too old resource version: {rv} ({current})"))
}

/// 504 `Timeout` with the `ResourceVersionTooLarge` cause, as
/// `storage.NewTooLargeResourceVersionError` (retry after 1 s, as the watch cache).
pub fn too_large(rv: &str, current: &str) -> ApiError {
    let mut e = ApiError::timeout(
        format!("Too large resource version: {rv}, current: {current}"),
        1,
    );
    let details = e.details.get_or_insert_with(Box::<StatusDetails>::default);
    details.causes = vec![StatusCause {
        reason: "ResourceVersionTooLarge".into(),
        message: "Too large resource version".into(),
        field: String::new(),
    }];
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_are_judged() {
        let epoch = Epoch::from_raw(0x3f9a_0c6e_21b4);
        assert_eq!(epoch.version(17), "3f9a0c6e21b4.17");
        assert_eq!(
            parse("3f9a0c6e21b4.17").unwrap(),
            Requested::At { epoch, seq: 17 }
        );
        assert_eq!(judge("0", epoch, 5).unwrap(), Position::Any);
        assert_eq!(
            judge("3f9a0c6e21b4.5", epoch, 5).unwrap(),
            Position::Known(5)
        );
        assert_eq!(
            judge("3f9a0c6e21b4.1", epoch, 5).unwrap(),
            Position::Known(1)
        );
        // From the future.
        let e = judge("3f9a0c6e21b4.6", epoch, 5).unwrap_err();
        assert_eq!((e.code, e.reason), (504, "Timeout"));
        assert_eq!(
            e.message,
            "Timeout: Too large resource version: 3f9a0c6e21b4.6, current: 3f9a0c6e21b4.5"
        );
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Timeout: Too large resource version: 3f9a0c6e21b4.6, current: 3f9a0c6e21b4.5","reason":"Timeout","details":{"causes":[{"reason":"ResourceVersionTooLarge","message":"Too large resource version"}],"retryAfterSeconds":1},"code":504}"#
        );
        // Another process, a restart, an old-style integer.
        for rv in ["000000000001.3", "3f9a0c6e21b5.1", "1", "42"] {
            let e = judge(rv, epoch, 5).unwrap_err();
            assert_eq!((e.code, e.reason), (410, "Expired"), "{rv}");
            assert_eq!(
                e.message,
                format!("too old resource version: {rv} (3f9a0c6e21b4.5)")
            );
        }
        // Garbage.
        for rv in [
            "abc",
            "3f9a0c6e21b4.",
            ".5",
            "3F9A0C6E21B4.5",
            "1.2.3",
            "-1",
            "12 ",
        ] {
            assert_eq!(judge(rv, epoch, 5).unwrap_err().code, 400, "{rv}");
        }
    }

    #[test]
    fn epochs_are_random_and_fixed_width() {
        let a = Epoch::random();
        let b = Epoch::random();
        assert_ne!(a, b);
        assert_eq!(Epoch::from_raw(1).to_string(), "000000000001");
        assert_eq!(a.to_string().len(), EPOCH_DIGITS);
    }
}
