//! Persistent dirty bitmaps on a [`NativeImage`]: list, apply `qemu-img bitmap` actions, read a
//! bitmap's bits (one call per bitmap, never per bit), and the space `qemu-img measure` reserves.
use crate::error::{invalid, to_u64};
use crate::image::NativeImage;
use crate::work::Work;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qimg_core::{BitmapAction, BitmapData, BitmapInfo};

/// One persistent bitmap, as `qemu-img info` lists it.
#[napi(object)]
pub struct NativeBitmap {
    /// Name.
    pub name: String,
    /// Bytes of guest data per bit.
    pub granularity: f64,
    /// Enabled (qcow2's `auto` flag): tracks writes.
    pub auto: bool,
    /// Inconsistent: left in use by an unclean close.
    pub in_use: bool,
}

/// A bitmap's bits: bit `i` (least significant bit of each byte first) covers guest bytes
/// `[i*granularity, (i+1)*granularity)`.
#[napi(object)]
pub struct NativeBitmapData {
    /// Bytes per bit.
    pub granularity: f64,
    /// Guest size covered.
    pub size: f64,
    /// The bits.
    pub bits: Buffer,
}

/// One `qemu-img bitmap` action.
#[napi(object)]
pub struct NativeBitmapAction {
    /// `add`, `remove`, `clear`, `enable`, `disable` or `merge`.
    pub op: String,
    /// The bitmap acted on.
    pub name: String,
    /// `add`: bytes per bit (default: the cluster size, clamped to 4 KiB..64 KiB).
    pub granularity: Option<f64>,
    /// `merge`: the source bitmap's bits.
    pub source: Option<NativeBitmapData>,
}

fn info(b: BitmapInfo) -> NativeBitmap {
    NativeBitmap {
        name: b.name,
        granularity: b.granularity as f64,
        auto: b.auto,
        in_use: b.in_use,
    }
}

fn action(a: NativeBitmapAction) -> qimg_core::Result<BitmapAction> {
    let name = a.name;
    Ok(match a.op.as_str() {
        "add" => BitmapAction::Add {
            name,
            granularity: a
                .granularity
                .map(|g| to_u64(g, "granularity"))
                .transpose()?,
        },
        "remove" => BitmapAction::Remove(name),
        "clear" => BitmapAction::Clear(name),
        "enable" => BitmapAction::Enable(name),
        "disable" => BitmapAction::Disable(name),
        "merge" => {
            let s = a
                .source
                .ok_or_else(|| invalid("merge needs a source bitmap"))?;
            BitmapAction::Merge {
                name,
                source: BitmapData {
                    granularity: to_u64(s.granularity, "granularity")?.max(1),
                    size: to_u64(s.size, "size")?,
                    bits: s.bits.to_vec(),
                },
            }
        }
        o => return Err(invalid(format!("unknown bitmap action '{o}'"))),
    })
}

#[napi]
impl NativeImage {
    /// The image's persistent bitmaps, in directory order.
    #[napi(ts_return_type = "Promise<Array<NativeBitmap>>")]
    pub fn bitmaps(&self) -> AsyncTask<Work<Vec<NativeBitmap>>> {
        self.run(|d| Ok(d.bitmaps()?.into_iter().map(info).collect()))
    }

    /// Apply actions in order and store the bitmaps durably (what succeeded before a failing
    /// action is kept, as with qemu-img).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn bitmap_apply(&self, actions: Vec<NativeBitmapAction>) -> AsyncTask<Work<()>> {
        let parsed: qimg_core::Result<Vec<BitmapAction>> =
            actions.into_iter().map(action).collect();
        self.run(move |d| d.bitmap_apply(&parsed?))
    }

    /// The bits of bitmap `name`.
    #[napi(ts_return_type = "Promise<NativeBitmapData>")]
    pub fn bitmap_read(&self, name: String) -> AsyncTask<Work<NativeBitmapData>> {
        self.run(move |d| {
            let b = d.bitmap_read(&name)?;
            Ok(NativeBitmapData {
                granularity: b.granularity as f64,
                size: b.size as f64,
                bits: b.bits.into(),
            })
        })
    }
}

/// Bytes the given persistent bitmaps need in a qcow2 image of `virtualSize` bytes with
/// `clusterSize` clusters (`qemu-img measure`'s `bitmaps` field).
#[napi]
pub fn measure_bitmaps(bitmaps: Vec<NativeBitmap>, virtual_size: f64, cluster_size: f64) -> f64 {
    let list: Vec<BitmapInfo> = bitmaps
        .into_iter()
        .map(|b| BitmapInfo {
            name: b.name,
            granularity: (b.granularity as u64).max(1),
            auto: b.auto,
            in_use: b.in_use,
        })
        .collect();
    qimg_formats::qcow2::bitmap::measure_bitmaps(
        &list,
        virtual_size as u64,
        (cluster_size as u64).max(512),
    ) as f64
}
