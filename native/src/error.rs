//! Errors as data across the boundary.
//!
//! A `qimg_core::Error` becomes a JS `Error` whose message is `QIMG:` followed by a JSON object
//! `{code, message, path?, offset?, errno?}`; `ts/native.ts` turns it into a `QimgError`.
use napi::{Error as NapiError, Status};

/// Encode a core error for JavaScript.
pub fn to_napi(e: qimg_core::Error) -> NapiError {
    let mut obj = serde_json::Map::new();
    obj.insert("code".into(), e.code.as_str().into());
    obj.insert("message".into(), e.message.clone().into());
    if let Some(p) = &e.path {
        obj.insert("path".into(), p.clone().into());
    }
    if let Some(o) = e.offset {
        obj.insert("offset".into(), o.into());
    }
    if let Some(n) = e.errno {
        obj.insert("errno".into(), n.into());
    }
    if let Some((sct, sc)) = e.nvme_status {
        obj.insert("nvmeStatusCodeType".into(), sct.into());
        obj.insert("nvmeStatusCode".into(), sc.into());
    }
    NapiError::new(
        Status::GenericFailure,
        format!("QIMG:{}", serde_json::Value::Object(obj)),
    )
}

/// An invalid-argument error raised at the boundary itself (bad offsets, closed handles).
pub fn invalid(message: impl Into<String>) -> qimg_core::Error {
    qimg_core::Error::invalid(message)
}

/// Convert a JS number offset/length to u64, refusing negatives and non-integers.
pub fn to_u64(v: f64, what: &str) -> qimg_core::Result<u64> {
    if !(v >= 0.0 && v.fract() == 0.0 && v <= 9_007_199_254_740_991.0) {
        return Err(invalid(format!(
            "{what} must be a non-negative safe integer, got {v}"
        )));
    }
    Ok(v as u64)
}
