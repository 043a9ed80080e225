//! The VMDK text descriptor: parsing (embedded in a sparse extent or in a separate file) and
//! writing in QEMU's layout.
//!
//! ```text
//! # Disk DescriptorFile
//! version=1
//! CID=efe7da71                         (hex)
//! parentCID=ffffffff                   (ffffffff: no parent)
//! createType="monolithicSparse"
//! parentFileNameHint="base.vmdk"       (only with a parent)
//!
//! # Extent description
//! RW 10485760 SPARSE "disk.vmdk"       (access, sectors, type, "file" [, start sector])
//! RW 4194304 FLAT "disk-f001.vmdk" 0
//!
//! # The Disk Data Base
//! #DDB
//! ddb.virtualHWVersion = "4"
//! ddb.adapterType = "ide" …
//! ```
use qimg_core::{Error, Result};

/// Largest descriptor read (a separate descriptor file, or an embedded one).
pub const MAX_DESCRIPTOR: u64 = 1 << 20;
/// Most extents accepted.
pub const MAX_EXTENTS: usize = 4096;

/// The kind of one extent line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentType {
    /// A sparse extent file (KDMV header).
    Sparse,
    /// A flat (raw) file from a start sector.
    Flat,
    /// Reads as zeros, no file.
    Zero,
    /// ESX "VMFS" flat extent (read as flat).
    Vmfs,
    /// ESX "VMFSSPARSE" (COWD): not supported.
    VmfsSparse,
    /// ESX "SESPARSE": not supported.
    SeSparse,
}

impl ExtentType {
    /// The name in descriptors and in `info` ("SPARSE", "FLAT", …).
    pub fn name(self) -> &'static str {
        match self {
            ExtentType::Sparse => "SPARSE",
            ExtentType::Flat => "FLAT",
            ExtentType::Zero => "ZERO",
            ExtentType::Vmfs => "VMFS",
            ExtentType::VmfsSparse => "VMFSSPARSE",
            ExtentType::SeSparse => "SESPARSE",
        }
    }
}

/// One extent line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    /// Size in sectors.
    pub sectors: u64,
    /// Extent type.
    pub kind: ExtentType,
    /// File name as written (empty for ZERO).
    pub file: String,
    /// Start sector in the file (FLAT/VMFS).
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// `CID`.
    pub cid: u32,
    /// `parentCID`.
    pub parent_cid: u32,
    /// `createType`.
    pub create_type: String,
    /// `parentFileNameHint`.
    pub parent_hint: Option<String>,
    /// Extent lines in order.
    pub extents: Vec<ExtentLine>,
    /// `ddb.*` entries, in order (values unquoted).
    pub ddb: Vec<(String, String)>,
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(s)
}

impl Descriptor {
    /// Parse descriptor text (NULs end it, as in an embedded descriptor's padding).
    pub fn parse(raw: &[u8]) -> Result<Self> {
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        let text = std::str::from_utf8(&raw[..end])
            .map_err(|_| Error::corrupt("VMDK descriptor is not valid UTF-8"))?;
        let mut d = Descriptor {
            parent_cid: u32::MAX,
            ..Default::default()
        };
        let mut have_cid = false;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let (k, v) = (k.trim(), unquote(v));
                match k {
                    "CID" => {
                        d.cid = u32::from_str_radix(v, 16)
                            .map_err(|_| Error::corrupt(format!("Invalid CID '{v}'")))?;
                        have_cid = true;
                    }
                    "parentCID" => {
                        d.parent_cid = u32::from_str_radix(v, 16)
                            .map_err(|_| Error::corrupt(format!("Invalid parentCID '{v}'")))?
                    }
                    "createType" => d.create_type = v.to_string(),
                    "parentFileNameHint" => d.parent_hint = Some(v.to_string()),
                    k if k.starts_with("ddb.") => d.ddb.push((k.to_string(), v.to_string())),
                    _ => {}
                }
                continue;
            }
            if line.starts_with("RW ")
                || line.starts_with("RDONLY ")
                || line.starts_with("NOACCESS ")
            {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(Error::corrupt("Too many extents in the VMDK descriptor"));
                }
                d.extents.push(parse_extent(line)?);
            }
        }
        if !have_cid && d.create_type.is_empty() {
            return Err(Error::corrupt(
                "Invalid VMDK descriptor (no CID or createType)",
            ));
        }
        Ok(d)
    }

    /// A `ddb.` value.
    pub fn ddb(&self, key: &str) -> Option<&str> {
        self.ddb
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Total sectors of every extent.
    pub fn sectors(&self) -> Result<u64> {
        self.extents.iter().try_fold(0u64, |a, e| {
            a.checked_add(e.sectors)
                .ok_or_else(|| Error::corrupt("VMDK extents overflow"))
        })
    }

    /// The text in QEMU's layout.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "# Disk DescriptorFile\nversion=1\nCID={:x}\nparentCID={:x}\ncreateType=\"{}\"\n",
            self.cid, self.parent_cid, self.create_type
        );
        if let Some(p) = &self.parent_hint {
            s += &format!("parentFileNameHint=\"{p}\"\n");
        }
        s += "\n# Extent description\n";
        for e in &self.extents {
            match e.kind {
                ExtentType::Flat | ExtentType::Vmfs => {
                    s += &format!(
                        "{} {} {} \"{}\" {}\n",
                        e.access,
                        e.sectors,
                        e.kind.name(),
                        e.file,
                        e.offset
                    )
                }
                ExtentType::Zero => s += &format!("{} {} ZERO\n", e.access, e.sectors),
                _ => {
                    s += &format!(
                        "{} {} {} \"{}\"\n",
                        e.access,
                        e.sectors,
                        e.kind.name(),
                        e.file
                    )
                }
            }
        }
        s += "\n# The Disk Data Base\n#DDB\n\n";
        for (k, v) in &self.ddb {
            s += &format!("{k} = \"{v}\"\n");
        }
        s
    }
}

/// Parse `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
fn parse_extent(line: &str) -> Result<ExtentLine> {
    let bad = || Error::corrupt(format!("Invalid extent line: {line}"));
    let mut it = line.splitn(3, char::is_whitespace);
    let access = it.next().ok_or_else(bad)?.to_string();
    let sectors: u64 = it
        .next()
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    let rest = it.next().ok_or_else(bad)?.trim_start();
    let (kind_s, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let kind = match kind_s {
        "SPARSE" => ExtentType::Sparse,
        "FLAT" => ExtentType::Flat,
        "ZERO" => ExtentType::Zero,
        "VMFS" => ExtentType::Vmfs,
        "VMFSSPARSE" => ExtentType::VmfsSparse,
        "SESPARSE" => ExtentType::SeSparse,
        other => {
            return Err(Error::unsupported(format!(
                "Unsupported extent type '{other}'"
            )))
        }
    };
    let rest = rest.trim();
    let (file, tail) = if kind == ExtentType::Zero {
        (String::new(), "")
    } else {
        let r = rest.strip_prefix('"').ok_or_else(bad)?;
        let q = r.find('"').ok_or_else(bad)?;
        (r[..q].to_string(), r[q + 1..].trim())
    };
    if kind != ExtentType::Zero && file.is_empty() {
        return Err(bad());
    }
    let offset: u64 = if tail.is_empty() {
        0
    } else {
        tail.parse().map_err(|_| bad())?
    };
    if matches!(kind, ExtentType::Flat | ExtentType::Vmfs) && offset.checked_mul(512).is_none() {
        return Err(bad());
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

/// A random CID (never `ffffffff`).
pub fn random_cid() -> u32 {
    let b = crate::uuid::random_v4();
    let c = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if c == u32::MAX {
        0x1234_5678
    } else {
        c
    }
}
