//! Internal snapshots as formats report them (qcow2 today), and how a snapshot is selected.
//!
//! The fields follow qemu-img's `SnapshotInfo` (`qemu-img info --output=json`, `snapshot -l`).

/// One internal snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotInfo {
    /// Unique ID string (qemu-img numbers them 1, 2, …).
    pub id: String,
    /// Name (tag); may repeat and may be empty.
    pub name: String,
    /// Bytes of saved VM state (0 for disk-only snapshots).
    pub vm_state_size: u64,
    /// Creation time, seconds since the epoch.
    pub date_sec: u32,
    /// Creation time, nanoseconds within the second.
    pub date_nsec: u32,
    /// Guest clock at creation, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Instruction count at creation, when recorded.
    pub icount: Option<u64>,
    /// Guest size when the snapshot was taken.
    pub disk_size: u64,
}

/// How a command names a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSelector<'a> {
    /// An ID, else a name (`qemu-img snapshot -a`, `convert -l NAME`): the first ID match wins,
    /// then the first name match.
    IdOrName(&'a str),
    /// Exactly these fields (`snapshot.id=…,snapshot.name=…`); at least one is set.
    Exact {
        /// ID to match, if given.
        id: Option<&'a str>,
        /// Name to match, if given.
        name: Option<&'a str>,
    },
}

impl SnapshotSelector<'_> {
    /// Index of the selected snapshot in `list`, if any.
    pub fn find(&self, list: &[SnapshotInfo]) -> Option<usize> {
        match *self {
            SnapshotSelector::IdOrName(s) => list
                .iter()
                .position(|x| x.id == s)
                .or_else(|| list.iter().position(|x| x.name == s)),
            SnapshotSelector::Exact {
                id: None,
                name: None,
            } => None,
            SnapshotSelector::Exact { id, name } => list
                .iter()
                .position(|x| id.is_none_or(|i| x.id == i) && name.is_none_or(|n| x.name == n)),
        }
    }

    /// How qemu-img names the selection in messages.
    pub fn describe(&self) -> String {
        match *self {
            SnapshotSelector::IdOrName(s) => s.to_string(),
            SnapshotSelector::Exact { id, name } => name.or(id).unwrap_or("").to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn(id: &str, name: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: id.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn id_wins_over_name_and_exact_needs_both() {
        let l = [sn("1", "2"), sn("2", "a"), sn("3", "a")];
        assert_eq!(SnapshotSelector::IdOrName("2").find(&l), Some(1));
        assert_eq!(SnapshotSelector::IdOrName("a").find(&l), Some(1));
        let e = SnapshotSelector::Exact {
            id: Some("3"),
            name: Some("a"),
        };
        assert_eq!(e.find(&l), Some(2));
        let e = SnapshotSelector::Exact {
            id: Some("1"),
            name: Some("a"),
        };
        assert_eq!(e.find(&l), None);
    }
}
