//! Which source serves each (namespace, name) of a [`super::RecordSet`], kept per source so
//! that a new load of one source touches only the keys that source had or has now (issue
//! #15: the set used to clone and re-key every record of every source on each publish).

use std::collections::{BTreeSet, HashMap};

use super::types::DataRecord;

/// (namespace, name).
pub(crate) type Key = (String, String);

/// The last good load of one source and where each of its keys sits in it.
#[derive(Default)]
pub(crate) struct SourceRecords {
    /// The records in load order.
    pub records: Vec<DataRecord>,
    /// Key → (position of its first record, how many records of this load carry it).
    index: HashMap<Key, (usize, usize)>,
}

impl SourceRecords {
    /// Indexes a load.
    pub fn new(records: Vec<DataRecord>) -> Self {
        let mut index: HashMap<Key, (usize, usize)> = HashMap::with_capacity(records.len());
        for (pos, r) in records.iter().enumerate() {
            index
                .entry(key_of(r))
                .and_modify(|e| e.1 += 1)
                .or_insert((pos, 1));
        }
        SourceRecords { records, index }
    }

    /// Every key of this load.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.index.keys()
    }

    /// Every key of this load, by value (the load is being replaced).
    pub fn into_keys(self) -> impl Iterator<Item = Key> {
        self.index.into_keys()
    }

    /// The first record with `key`, with its position, and how many records carry it.
    pub fn get(&self, key: &Key) -> Option<(usize, &DataRecord, usize)> {
        self.index
            .get(key)
            .map(|&(pos, count)| (pos, &self.records[pos], count))
    }
}

/// A key's record from the earliest source that has it: (source index, position in that
/// source's load, the record).
pub(crate) fn winner<'a>(
    sources: &'a [Option<SourceRecords>],
    key: &Key,
) -> Option<(usize, usize, &'a DataRecord)> {
    sources.iter().enumerate().find_map(|(s, records)| {
        let (pos, record, _) = records.as_ref()?.get(key)?;
        Some((s, pos, record))
    })
}

/// The name conflicts of `key`: (namespace, name, losing source index), for every source
/// whose record of `key` is not served (a later source, or a second record of the winner's
/// own load).
pub(crate) fn conflicts_of(
    sources: &[Option<SourceRecords>],
    key: &Key,
    out: &mut BTreeSet<(String, String, usize)>,
) {
    let mut owned = false;
    for (s, records) in sources.iter().enumerate() {
        let Some((_, _, count)) = records.as_ref().and_then(|r| r.get(key)) else {
            continue;
        };
        if owned || count > 1 {
            out.insert((key.0.clone(), key.1.clone(), s));
        }
        owned = true;
    }
}

/// The key of a record.
pub(crate) fn key_of(r: &DataRecord) -> Key {
    (r.namespace().to_string(), r.metadata.name.clone())
}
