//! Composite resourceVersions of a union of the in-memory record set and the
//! PostgreSQL table: `<epoch>.<seq>_p<id>` (e.g. `3f9a0c6e21b4.17_p81234`), the set's
//! counter and the table's change id. `_` and `p` occur in neither part, and the form
//! is URL-safe. See docs/datarecords.md ("A union of in-memory and table sources").

use crate::api::status::ApiError;
use crate::records::version::{self, Epoch};

/// The two positions of a union version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnionVersion {
    /// The record set's counter (in this process's epoch).
    pub seq: u64,
    /// The table's change id.
    pub id: u64,
}

impl UnionVersion {
    /// The string form in `epoch`.
    pub fn format(self, epoch: Epoch) -> String {
        format!("{}_p{}", epoch.version(self.seq), self.id)
    }
}

/// A requested resourceVersion of a union, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requested {
    /// `0`: any state.
    Any,
    /// `<epoch>.<seq>_p<id>`.
    At {
        /// The epoch of the in-memory part.
        epoch: Epoch,
        /// The two positions.
        at: UnionVersion,
    },
    /// A version of another form this server hands out (`<epoch>.<seq>` of a server
    /// without a table, a bare `<id>` of a table-only server, another store's integer):
    /// it cannot name a state of the union, so it is 410 Expired (the client relists).
    Other,
}

fn invalid(rv: &str) -> ApiError {
    ApiError::bad_request(format!(
        "invalid resource version {rv:?}: expected a resourceVersion this server handed out"
    ))
}

/// Parses a requested resourceVersion; 400 `BadRequest` for one of no known form.
pub fn parse(rv: &str) -> Result<Requested, ApiError> {
    if rv == "0" {
        return Ok(Requested::Any);
    }
    if let Some((mem, id)) = rv.split_once("_p") {
        let version::Requested::At { epoch, seq } = version::parse(mem).map_err(|_| invalid(rv))?
        else {
            return Err(invalid(rv));
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(rv));
        }
        let id = id.parse().map_err(|_| invalid(rv))?;
        return Ok(Requested::At {
            epoch,
            at: UnionVersion { seq, id },
        });
    }
    version::parse(rv).map_err(|_| invalid(rv))?;
    Ok(Requested::Other)
}

/// Where a requested version stands against the in-memory part (the table part is
/// judged by the table: compacted is 410, the future is `ResourceVersionTooLarge`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Position {
    /// Any state will do (`0`).
    Any,
    /// A known in-memory counter (not above the current one) and a change id.
    Known(UnionVersion),
}

/// Judges `rv` against this process's `epoch` and the set's current counter:
/// another epoch (another replica, before a restart) or another form is 410 Expired,
/// a counter from the future is 504 `ResourceVersionTooLarge`.
pub fn judge(rv: &str, epoch: Epoch, current: UnionVersion) -> Result<Position, ApiError> {
    match parse(rv)? {
        Requested::Any => Ok(Position::Any),
        Requested::At { epoch: e, at } if e == epoch => {
            if at.seq > current.seq {
                Err(version::too_large(rv, &current.format(epoch)))
            } else {
                Ok(Position::Known(at))
            }
        }
        Requested::At { .. } | Requested::Other => {
            Err(version::expired(rv, &current.format(epoch)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: u64 = 0x3f9a_0c6e_21b4;

    #[test]
    fn round_trips() {
        let epoch = Epoch::from_raw(E);
        let v = UnionVersion { seq: 17, id: 81234 };
        assert_eq!(v.format(epoch), "3f9a0c6e21b4.17_p81234");
        assert_eq!(
            parse(&v.format(epoch)).unwrap(),
            Requested::At { epoch, at: v }
        );
        assert_eq!(parse("0").unwrap(), Requested::Any);
    }

    #[test]
    fn judged_as_kube_apiserver_judges_a_version() {
        let epoch = Epoch::from_raw(E);
        let cur = UnionVersion { seq: 5, id: 100 };
        assert_eq!(judge("0", epoch, cur).unwrap(), Position::Any);
        assert_eq!(
            judge("3f9a0c6e21b4.4_p7", epoch, cur).unwrap(),
            Position::Known(UnionVersion { seq: 4, id: 7 })
        );
        // The table part is the table's to judge (a future id is its 504).
        assert_eq!(
            judge("3f9a0c6e21b4.5_p999", epoch, cur).unwrap(),
            Position::Known(UnionVersion { seq: 5, id: 999 })
        );
        let e = judge("3f9a0c6e21b4.6_p1", epoch, cur).unwrap_err();
        assert_eq!((e.code, e.reason), (504, "Timeout"));
        assert!(
            e.message.contains("current: 3f9a0c6e21b4.5_p100"),
            "{}",
            e.message
        );
        // Another epoch (a restart, another replica), or a form of another server.
        for rv in ["000000000001.3_p7", "3f9a0c6e21b4.3", "42"] {
            let e = judge(rv, epoch, cur).unwrap_err();
            assert_eq!((e.code, e.reason), (410, "Expired"), "{rv}");
            assert_eq!(
                e.message,
                format!("too old resource version: {rv} (3f9a0c6e21b4.5_p100)")
            );
        }
    }

    #[test]
    fn garbage_is_400_never_a_panic() {
        let epoch = Epoch::from_raw(E);
        let cur = UnionVersion { seq: 5, id: 100 };
        for rv in [
            "",
            "_p",
            "_p1",
            "3f9a0c6e21b4.1_p",
            "3f9a0c6e21b4.1_px",
            "3f9a0c6e21b4.1_p-1",
            "3f9a0c6e21b4.1_p1_p2",
            "3f9a0c6e21b4.1_p99999999999999999999999",
            "42_p1",
            "0_p1",
            "3F9A0C6E21B4.1_p1",
            "3f9a0c6e21b4.1_P1",
            "abc",
            "3f9a0c6e21b4.1 _p1",
        ] {
            let e = judge(rv, epoch, cur).unwrap_err();
            assert_eq!(e.code, 400, "{rv:?}");
        }
    }
}
