//! `serveImage`: run the NBD server ([`qimg_core::nbd_server`]) on an opened image. The server
//! lives on its own Rust threads; JavaScript only starts it, hears when it stopped (a
//! thread-safe callback) and stops it.
use crate::error::{invalid, to_napi};
use crate::image::NativeImage;
use crate::work::{spawn, Work};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use qimg_core::nbd::TlsCreds;
use qimg_core::nbd_server::{Listen, NbdServer, ServerConfig};
use std::sync::Arc;

/// How to serve (validated by TypeScript).
#[napi(object)]
pub struct NativeServeOptions {
    /// Unix socket path; when absent, TCP on `bind`:`port`.
    pub socket: Option<String>,
    /// TCP address to bind (default `0.0.0.0`).
    pub bind: Option<String>,
    /// TCP port (default 10809; 0 lets the OS choose).
    pub port: Option<u32>,
    /// Export name (default "").
    pub export_name: Option<String>,
    /// Export description.
    pub description: Option<String>,
    /// Refuse writes.
    pub read_only: bool,
    /// Clients at once (default 1; 0 = unlimited).
    pub shared: Option<u32>,
    /// Keep serving after the last client leaves.
    pub persistent: Option<bool>,
    /// Require TLS with these server credentials.
    pub tls: Option<NativeTlsCreds>,
    /// Offer the `qemu:allocation-depth` metadata context (`-A`).
    pub allocation_depth: Option<bool>,
}

/// Server TLS credentials (a `tls-creds-psk` or `tls-creds-x509` object with `endpoint=server`).
#[napi(object)]
pub struct NativeTlsCreds {
    /// `psk` or `x509`.
    pub kind: String,
    /// The credentials directory (`keys.psk`; or `ca-cert.pem`, `server-cert.pem`, `server-key.pem`).
    pub dir: String,
    /// x509: require a client certificate signed by `ca-cert.pem` (QEMU's `verify-peer`, default on).
    pub verify_peer: Option<bool>,
}

fn tls_creds(t: &NativeTlsCreds) -> qimg_core::Result<TlsCreds> {
    let dir = std::path::Path::new(&t.dir);
    match t.kind.as_str() {
        "psk" => TlsCreds::psk_from_dir(dir, None, false),
        "x509" => TlsCreds::x509_from_dir(dir, t.verify_peer.unwrap_or(true)),
        k => Err(invalid(format!("Unknown TLS credentials type '{k}'"))),
    }
}

/// A running NBD server.
#[napi]
pub struct NativeServer {
    inner: Arc<NbdServer>,
}

/// Called once when the server has stopped: with "" after a clean stop, or with the encoded
/// error (`QIMG:{…}`) of the final flush.
pub type OnStop = ThreadsafeFunction<String, (), String, Status, false>;

/// Start serving `image` (which stays open, with its locks, until the caller closes it after
/// the server has stopped). `on_stop` fires once the server has stopped (closed, or its last
/// client left when not persistent), after the final flush; until then it keeps the event loop
/// alive, as a listening `net.Server` does. The wait runs on a thread of its own, not on libuv's
/// pool.
#[napi(
    ts_args_type = "image: NativeImage, opts: NativeServeOptions, onStop: (error: string) => void"
)]
pub fn serve_image(
    image: &NativeImage,
    opts: NativeServeOptions,
    on_stop: OnStop,
) -> napi::Result<NativeServer> {
    let driver = image.driver().map_err(to_napi)?;
    let listen = match opts.socket {
        Some(p) => Listen::Unix(p),
        None => Listen::Tcp(
            opts.bind.unwrap_or_else(|| "0.0.0.0".into()),
            u16::try_from(opts.port.unwrap_or(10809))
                .map_err(|_| to_napi(invalid("Invalid port number")))?,
        ),
    };
    let tls = match &opts.tls {
        Some(t) => Some(tls_creds(t).map_err(to_napi)?),
        None => None,
    };
    let config = ServerConfig {
        export_name: opts.export_name.unwrap_or_default(),
        description: opts.description,
        read_only: opts.read_only,
        shared: opts.shared.unwrap_or(1),
        persistent: opts.persistent.unwrap_or(false),
        tls,
        allocation_depth: opts.allocation_depth.unwrap_or(false),
    };
    let s = Arc::new(NbdServer::start(driver, &listen, config).map_err(to_napi)?);
    let w = s.clone();
    std::thread::Builder::new()
        .name("nbd-wait".into())
        .spawn(move || {
            let msg = match w.wait() {
                Ok(()) => String::new(),
                Err(e) => to_napi(e).reason.clone(),
            };
            drop(w);
            on_stop.call(msg, ThreadsafeFunctionCallMode::NonBlocking);
        })
        .map_err(|e| {
            to_napi(qimg_core::Error::io(
                "Failed to start the NBD wait thread",
                &e,
            ))
        })?;
    Ok(NativeServer { inner: s })
}

#[napi]
impl NativeServer {
    /// The TCP port listened on (the OS's choice when 0 was asked).
    #[napi(getter)]
    pub fn port(&self) -> Option<u32> {
        self.inner.port().map(u32::from)
    }

    /// The Unix socket path listened on.
    #[napi(getter)]
    pub fn socket_path(&self) -> Option<String> {
        self.inner.socket_path().map(str::to_string)
    }

    /// Clients connected now.
    #[napi(getter)]
    pub fn connections(&self) -> u32 {
        self.inner.connections()
    }

    /// Stop: refuse new clients, disconnect the current ones after their in-flight requests,
    /// flush the image. The image itself stays open (close it next to release its locks).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close(&self) -> AsyncTask<Work<()>> {
        let s = self.inner.clone();
        spawn(None, move || s.close())
    }
}
