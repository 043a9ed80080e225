//! TLS for NBD (`NBD_OPT_STARTTLS`), with credentials laid out as QEMU's `tls-creds-psk` and
//! `tls-creds-x509` objects take them from their `dir`:
//!
//! ```text
//! tls-creds-psk   keys.psk         one "username:hexkey" line per user (gnutls psktool format);
//!                                  the client uses the line of its username ("qemu" by default)
//! tls-creds-x509  ca-cert.pem      CA that signed the peer's certificate
//!                 client-cert.pem  client certificate (optional, sent when present)
//!                 client-key.pem   its private key
//!                 server-cert.pem  server certificate (server endpoint)
//!                 server-key.pem   its private key
//! ```
//!
//! Built on OpenSSL (the `openssl` crate; rustls has no PSK). The client side is used by
//! [`super::NbdStorage`]; [`TlsCreds::acceptor`] builds the server side for an NBD server.
use crate::error::{Error, ErrorCode, Result};
use openssl::ssl::{SslAcceptor, SslConnector, SslContextBuilder, SslFiletype, SslMethod};
use openssl::ssl::{SslVerifyMode, SslVersion};
use std::path::{Path, PathBuf};

/// Longest `keys.psk` file read (it holds a few short lines).
const MAX_PSK_FILE: u64 = 1 << 20;

/// TLS credentials, as a `tls-creds-*` object describes them.
#[derive(Clone, PartialEq, Eq)]
pub enum TlsCreds {
    /// Pre-shared keys (`tls-creds-psk`): the identity used by a client, and every key of the file
    /// (a server accepts any of them).
    Psk {
        /// Username a client presents.
        username: String,
        /// Every (identity, key) of `keys.psk`.
        keys: Vec<(String, Vec<u8>)>,
    },
    /// Certificates (`tls-creds-x509`).
    X509 {
        /// The credentials directory.
        dir: PathBuf,
        /// Check the peer's certificate (QEMU's `verify-peer`, default on).
        verify_peer: bool,
    },
}

impl std::fmt::Debug for TlsCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        match self {
            TlsCreds::Psk { username, keys } => f
                .debug_struct("Psk")
                .field("username", username)
                .field("keys", &keys.len())
                .finish(),
            TlsCreds::X509 { dir, verify_peer } => f
                .debug_struct("X509")
                .field("dir", dir)
                .field("verify_peer", verify_peer)
                .finish(),
        }
    }
}

/// TLS settings of one NBD connection: credentials and the name the server's certificate must
/// carry (`tls-hostname`; the TCP host when absent, none for Unix sockets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The credentials.
    pub creds: TlsCreds,
    /// Name checked against the server's certificate (x509 only).
    pub hostname: Option<String>,
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Io, format!("TLS: {what}: {e}"))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl TlsCreds {
    /// `tls-creds-psk,dir=DIR[,username=NAME]`: read `DIR/keys.psk`. The username (default
    /// "qemu", as QEMU's) must have a line when the credentials are used by a client; `client`
    /// says so.
    pub fn psk_from_dir(dir: &Path, username: Option<&str>, client: bool) -> Result<Self> {
        let path = dir.join("keys.psk");
        let name = path.display().to_string();
        let len = std::fs::metadata(&path)
            .map_err(|e| Error::io(format!("Unable to access credentials {name}"), &e))?
            .len();
        if len > MAX_PSK_FILE {
            return Err(Error::invalid(format!("PSK file '{name}' is too large")));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("Unable to access credentials {name}"), &e))?;
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (user, hex) = line
                .rsplit_once(':')
                .ok_or_else(|| Error::invalid(format!("PSK file '{name}' has a malformed line")))?;
            let key = unhex(hex).ok_or_else(|| {
                Error::invalid(format!("PSK file '{name}' has a key that is not hex"))
            })?;
            keys.push((user.to_string(), key));
        }
        let username = username.unwrap_or("qemu").to_string();
        if client && !keys.iter().any(|(u, _)| *u == username) {
            return Err(Error::invalid(format!(
                "Username {username} not found in PSK file {name}"
            )));
        }
        if username.len() > 255 {
            return Err(Error::invalid("PSK username longer than 255 bytes"));
        }
        Ok(TlsCreds::Psk { username, keys })
    }

    /// `tls-creds-x509,dir=DIR[,verify-peer=on|off]`.
    pub fn x509_from_dir(dir: &Path, verify_peer: bool) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("TLS credentials directory '{}' not found", dir.display()),
            ));
        }
        Ok(TlsCreds::X509 {
            dir: dir.to_path_buf(),
            verify_peer,
        })
    }

    fn file(dir: &Path, name: &str) -> Result<PathBuf> {
        let p = dir.join(name);
        if !p.is_file() {
            return Err(Error::new(
                ErrorCode::NotFound,
                format!("Unable to access credentials {}", p.display()),
            ));
        }
        Ok(p)
    }

    fn psk_ciphers(b: &mut SslContextBuilder) -> Result<()> {
        // TLS 1.2 PSK suites (TLS 1.3 uses the external PSK with its default suites).
        b.set_cipher_list("ECDHE-PSK:DHE-PSK:PSK:@SECLEVEL=0")
            .map_err(|e| tls_err("setting PSK ciphers", e))
    }

    /// A client context for these credentials.
    pub fn connector(&self) -> Result<SslConnector> {
        let mut b = SslConnector::builder(SslMethod::tls_client())
            .map_err(|e| tls_err("creating a context", e))?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(|e| tls_err("setting the protocol version", e))?;
        match self {
            TlsCreds::Psk { username, keys } => {
                Self::psk_ciphers(&mut b)?;
                b.set_verify(SslVerifyMode::NONE);
                let key = keys
                    .iter()
                    .find(|(u, _)| u == username)
                    .map(|(_, k)| k.clone())
                    .ok_or_else(|| Error::invalid(format!("no PSK for user '{username}'")))?;
                let ident = username.clone().into_bytes();
                b.set_psk_client_callback(move |_, _hint, id, psk| {
                    if ident.len() + 1 > id.len() || key.len() > psk.len() {
                        return Ok(0);
                    }
                    id[..ident.len()].copy_from_slice(&ident);
                    id[ident.len()] = 0;
                    psk[..key.len()].copy_from_slice(&key);
                    Ok(key.len())
                });
            }
            TlsCreds::X509 { dir, verify_peer } => {
                b.set_ca_file(Self::file(dir, "ca-cert.pem")?)
                    .map_err(|e| tls_err("loading ca-cert.pem", e))?;
                let (cert, key) = (dir.join("client-cert.pem"), dir.join("client-key.pem"));
                if cert.is_file() && key.is_file() {
                    b.set_certificate_chain_file(&cert)
                        .map_err(|e| tls_err("loading client-cert.pem", e))?;
                    b.set_private_key_file(&key, SslFiletype::PEM)
                        .map_err(|e| tls_err("loading client-key.pem", e))?;
                }
                b.set_verify(if *verify_peer {
                    SslVerifyMode::PEER
                } else {
                    SslVerifyMode::NONE
                });
            }
        }
        Ok(b.build())
    }

    /// A server context for these credentials (for an NBD server's `--tls-creds`). x509 uses
    /// `server-cert.pem`/`server-key.pem` and, with `verify_peer`, requires a client certificate
    /// signed by `ca-cert.pem`.
    pub fn acceptor(&self) -> Result<SslAcceptor> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(|e| tls_err("creating a context", e))?;
        match self {
            TlsCreds::Psk { keys, .. } => {
                Self::psk_ciphers(&mut b)?;
                let keys = keys.clone();
                b.set_psk_server_callback(move |_, ident, psk| {
                    let Some(ident) = ident else { return Ok(0) };
                    match keys.iter().find(|(u, _)| u.as_bytes() == ident) {
                        Some((_, k)) if k.len() <= psk.len() => {
                            psk[..k.len()].copy_from_slice(k);
                            Ok(k.len())
                        }
                        _ => Ok(0),
                    }
                });
            }
            TlsCreds::X509 { dir, verify_peer } => {
                b.set_certificate_chain_file(Self::file(dir, "server-cert.pem")?)
                    .map_err(|e| tls_err("loading server-cert.pem", e))?;
                b.set_private_key_file(Self::file(dir, "server-key.pem")?, SslFiletype::PEM)
                    .map_err(|e| tls_err("loading server-key.pem", e))?;
                if *verify_peer {
                    b.set_ca_file(Self::file(dir, "ca-cert.pem")?)
                        .map_err(|e| tls_err("loading ca-cert.pem", e))?;
                    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
                }
            }
        }
        Ok(b.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_file_parsing() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("keys.psk"), "qemu:00ff10\nalice:abcd\n").unwrap();
        let c = TlsCreds::psk_from_dir(d.path(), None, true).unwrap();
        assert_eq!(
            c,
            TlsCreds::Psk {
                username: "qemu".into(),
                keys: vec![
                    ("qemu".into(), vec![0, 255, 16]),
                    ("alice".into(), vec![0xab, 0xcd])
                ]
            }
        );
        assert!(!format!("{c:?}").contains("255"));
        let e = TlsCreds::psk_from_dir(d.path(), Some("bob"), true).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        std::fs::write(d.path().join("keys.psk"), "qemu:xyz\n").unwrap();
        assert!(TlsCreds::psk_from_dir(d.path(), None, true).is_err());
        let e = TlsCreds::psk_from_dir(&d.path().join("none"), None, true).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }
}
