//! NBD-specific exports: TLS settings of an NBD target (QEMU's `tls-creds` object and
//! `tls-hostname`), the address conversion shared with image opening, and export listing
//! (`NBD_OPT_LIST`, as `nbdinfo --list`).
use crate::error::invalid;
use crate::image::NbdTarget;
use crate::work::{spawn, Work};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use qimg_core::nbd::{Address, TlsConfig, TlsCreds};
use std::path::Path;

/// The TLS credentials object an NBD target names (`--object tls-creds-psk|tls-creds-x509`).
#[napi(object)]
pub struct NbdTls {
    /// `psk` or `x509`.
    pub kind: String,
    /// The credentials directory (`dir=`).
    pub dir: String,
    /// PSK username (`username=`, default "qemu").
    pub username: Option<String>,
    /// x509 `verify-peer` (default on).
    pub verify_peer: Option<bool>,
    /// `tls-hostname`: the name the server certificate must carry.
    pub hostname: Option<String>,
}

/// One export listed by the server.
#[napi(object)]
pub struct NbdExportEntry {
    /// Export name.
    pub name: String,
    /// Description (may be empty).
    pub description: String,
}

/// The TLS configuration of a target, if it has one.
pub fn tls_config(t: &Option<NbdTls>) -> qimg_core::Result<Option<TlsConfig>> {
    let Some(t) = t else { return Ok(None) };
    let creds = match t.kind.as_str() {
        "psk" => TlsCreds::psk_from_dir(Path::new(&t.dir), t.username.as_deref(), true)?,
        "x509" => TlsCreds::x509_from_dir(Path::new(&t.dir), t.verify_peer.unwrap_or(true))?,
        k => return Err(invalid(format!("Unsupported TLS credentials type '{k}'"))),
    };
    Ok(Some(TlsConfig {
        creds,
        hostname: t.hostname.clone(),
    }))
}

/// The server address of a target.
pub fn address(n: &NbdTarget) -> qimg_core::Result<Address> {
    Ok(match n.server_type.as_str() {
        "inet" => Address::Tcp(
            n.host
                .clone()
                .ok_or_else(|| invalid("NBD server host is missing"))?,
            u16::try_from(n.port.unwrap_or(10809)).map_err(|_| invalid("NBD port out of range"))?,
        ),
        "unix" => Address::Unix(
            n.path
                .clone()
                .ok_or_else(|| invalid("NBD socket path is missing"))?,
        ),
        t => return Err(invalid(format!("Unknown NBD server type '{t}'"))),
    })
}

/// List the exports of an NBD server (`NBD_OPT_LIST`).
#[napi(ts_return_type = "Promise<NbdExportEntry[]>")]
pub fn nbd_list_exports(target: NbdTarget) -> AsyncTask<Work<Vec<NbdExportEntry>>> {
    spawn(None, move || {
        let addr = address(&target)?;
        let tls = tls_config(&target.tls)?;
        let list = qimg_core::nbd::list_exports(&addr, tls.as_ref(), qimg_core::nbd::IO_TIMEOUT)?;
        Ok(list
            .into_iter()
            .map(|e| NbdExportEntry {
                name: e.name,
                description: e.description,
            })
            .collect())
    })
}
