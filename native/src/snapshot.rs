//! Internal snapshots of an opened image: list, create, apply, delete, and a read-only view of a
//! snapshot's contents (`qemu-img snapshot`, `info`'s snapshot list, `convert -l`).
use crate::image::NativeImage;
use crate::work::{spawn, Work};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qimg_core::{SnapshotInfo, SnapshotSelector};

/// One internal snapshot, with qemu-img's `SnapshotInfo` fields.
#[napi(object)]
pub struct NativeSnapshot {
    /// Unique ID string.
    pub id: String,
    /// Name (tag).
    pub name: String,
    /// Bytes of saved VM state.
    pub vm_state_size: f64,
    /// Creation time: seconds since the epoch.
    pub date_sec: f64,
    /// Creation time: nanoseconds within the second.
    pub date_nsec: f64,
    /// Guest clock at creation, in nanoseconds.
    pub vm_clock_nsec: f64,
    /// Instruction count, when recorded.
    pub icount: Option<f64>,
    /// Guest size when the snapshot was taken.
    pub disk_size: f64,
}

/// Which snapshot: `idOrName` (an ID, else a name), or `id` and/or `name` matched exactly.
#[napi(object)]
pub struct SnapshotRefArg {
    /// An ID, else a name (`qemu-img snapshot -a`, `convert -l NAME`).
    pub id_or_name: Option<String>,
    /// Exact ID (`snapshot.id=`).
    pub id: Option<String>,
    /// Exact name (`snapshot.name=`).
    pub name: Option<String>,
}

fn to_native(s: SnapshotInfo) -> NativeSnapshot {
    NativeSnapshot {
        id: s.id,
        name: s.name,
        vm_state_size: s.vm_state_size as f64,
        date_sec: s.date_sec as f64,
        date_nsec: s.date_nsec as f64,
        vm_clock_nsec: s.vm_clock_nsec as f64,
        icount: s.icount.map(|v| v as f64),
        disk_size: s.disk_size as f64,
    }
}

fn selector(r: &SnapshotRefArg) -> SnapshotSelector<'_> {
    match &r.id_or_name {
        Some(s) => SnapshotSelector::IdOrName(s),
        None => SnapshotSelector::Exact {
            id: r.id.as_deref(),
            name: r.name.as_deref(),
        },
    }
}

#[napi]
impl NativeImage {
    /// The image's internal snapshots (empty for formats without them).
    #[napi(ts_return_type = "Promise<Array<NativeSnapshot>>")]
    pub fn snapshots(&self) -> AsyncTask<Work<Vec<NativeSnapshot>>> {
        let d = self.driver();
        spawn(None, move || {
            Ok(d?.snapshots()?.into_iter().map(to_native).collect())
        })
    }

    /// Take an internal snapshot named `name`; resolves to the new snapshot.
    #[napi(ts_return_type = "Promise<NativeSnapshot>")]
    pub fn snapshot_create(&self, name: String) -> AsyncTask<Work<NativeSnapshot>> {
        let d = self.driver();
        spawn(None, move || Ok(to_native(d?.snapshot_create(&name)?)))
    }

    /// Revert the image to a snapshot (`qemu-img snapshot -a`).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn snapshot_apply(&self, which: SnapshotRefArg) -> AsyncTask<Work<()>> {
        let d = self.driver();
        spawn(None, move || d?.snapshot_apply(selector(&which)))
    }

    /// Delete a snapshot (`qemu-img snapshot -d`).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn snapshot_delete(&self, which: SnapshotRefArg) -> AsyncTask<Work<()>> {
        let d = self.driver();
        spawn(None, move || d?.snapshot_delete(selector(&which)))
    }

    /// A read-only image showing a snapshot's contents (`convert -l`). Close it before this one.
    #[napi(ts_return_type = "Promise<NativeImage>")]
    pub fn snapshot_view(&self, which: SnapshotRefArg) -> AsyncTask<Work<NativeImage>> {
        let d = self.driver();
        spawn(None, move || {
            Ok(NativeImage::from_driver(
                d?.snapshot_view(selector(&which))?,
            ))
        })
    }
}
