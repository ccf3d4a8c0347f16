//! Which disk to install to: a device path (`/dev/sda`, EKS Anywhere's rule) or a hint the
//! agent resolves against its inventory, as Ironic's root device hints: `serial=S`,
//! `wwn=W`, `model=M`, `by-path=P`, `size>=500` (GiB; `G`/`T` suffixes too), `smallest`,
//! several joined with `&` (`model<in>QEMU&size>=10`). String operators `=` (the default,
//! Ironic's `s==`), `!=`, `<in>` (substring); size operators `=`, `!=`, `>=`, `<=`, `>`, `<`.
//! Resolution is exact: no disk, or more than one, is an error naming the disks seen.

use std::fmt;

use crate::inventory::Disk;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Serial,
    Wwn,
    Model,
    ByPath,
    Name,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
    Contains,
}

impl Cmp {
    fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "!=",
            Cmp::Ge => ">=",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Lt => "<",
            Cmp::Contains => "<in>",
        }
    }

    /// Compares two numbers.
    pub fn holds<T: PartialOrd>(self, left: T, right: T) -> bool {
        match self {
            Cmp::Eq => left == right,
            Cmp::Ne => left != right,
            Cmp::Ge => left >= right,
            Cmp::Le => left <= right,
            Cmp::Gt => left > right,
            Cmp::Lt => left < right,
            Cmp::Contains => false,
        }
    }

    /// Splits `key OP value` at the first operator: (key, op, value).
    pub fn split(clause: &str) -> Option<(&str, Cmp, &str)> {
        // Longest operators first, so `>=` is not read as `>`.
        const OPS: [(&str, Cmp); 8] = [
            ("<in>", Cmp::Contains),
            ("s==", Cmp::Eq),
            ("==", Cmp::Eq),
            (">=", Cmp::Ge),
            ("<=", Cmp::Le),
            ("!=", Cmp::Ne),
            (">", Cmp::Gt),
            ("<", Cmp::Lt),
        ];
        let mut best: Option<(usize, &str, Cmp)> = None;
        for (sym, op) in OPS.iter().copied().chain([("=", Cmp::Eq)]) {
            if let Some(i) = clause.find(sym)
                && best.is_none_or(|(j, s, _)| i < j || (i == j && sym.len() > s.len()))
            {
                best = Some((i, sym, op));
            }
        }
        let (i, sym, op) = best?;
        Some((clause[..i].trim(), op, clause[i + sym.len()..].trim()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    Text(Field, Cmp, String),
    /// Bytes.
    Size(Cmp, u64),
    Smallest,
}

/// A parsed `disk` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskChoice {
    /// A device path, used as given.
    Path(String),
    Hint(Vec<Clause>),
}

/// Why a `disk` value does not parse, or names no single disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HintError {
    #[error(
        "{0:?} is neither a device path like /dev/sda nor a disk hint (serial=, wwn=, model=, by-path=, size>=GiB, smallest; joined with &)"
    )]
    Syntax(String),
    #[error("disk hint {hint:?}: no disk matches (disks seen: {seen})")]
    Unmatched { hint: String, seen: String },
    #[error("disk hint {hint:?}: {count} disks match, it must pick one (disks seen: {seen})")]
    Ambiguous {
        hint: String,
        count: usize,
        seen: String,
    },
}

/// `/dev/` then ASCII letters, digits, '_' and '-' (EKS Anywhere's `^(/dev/[\w-]+)+$` for one
/// device).
pub fn is_device_path(disk: &str) -> bool {
    disk.strip_prefix("/dev/").is_some_and(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// `500`, `500G`, `500GiB`, `2T`: GiB unless a unit says otherwise (Ironic's size is GiB).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit: u64 = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        "m" | "mb" | "mib" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(unit)
}

impl DiskChoice {
    pub fn parse(s: &str) -> Result<DiskChoice, HintError> {
        let s = s.trim();
        if s.starts_with("/dev/") {
            return if is_device_path(s) {
                Ok(DiskChoice::Path(s.to_string()))
            } else {
                Err(HintError::Syntax(s.to_string()))
            };
        }
        let bad = || HintError::Syntax(s.to_string());
        let mut clauses = Vec::new();
        for c in s.split('&').map(str::trim) {
            if c == "smallest" {
                clauses.push(Clause::Smallest);
                continue;
            }
            let (key, op, value) = Cmp::split(c).ok_or_else(bad)?;
            if value.is_empty() {
                return Err(bad());
            }
            let field = match key {
                "size" => {
                    if op == Cmp::Contains {
                        return Err(bad());
                    }
                    clauses.push(Clause::Size(op, parse_size(value).ok_or_else(bad)?));
                    continue;
                }
                "serial" => Field::Serial,
                "wwn" => Field::Wwn,
                "model" => Field::Model,
                "by-path" | "by_path" => Field::ByPath,
                "name" => Field::Name,
                _ => return Err(bad()),
            };
            if !matches!(op, Cmp::Eq | Cmp::Ne | Cmp::Contains) {
                return Err(bad());
            }
            clauses.push(Clause::Text(field, op, value.to_string()));
        }
        if clauses.is_empty() {
            return Err(bad());
        }
        Ok(DiskChoice::Hint(clauses))
    }

    /// The one disk this choice names among `disks`: a path as given (when it is one of
    /// them, or they are unknown), a hint resolved.
    pub fn resolve<'a>(&self, hint: &str, disks: &'a [Disk]) -> Result<Resolved<'a>, HintError> {
        let clauses = match self {
            DiskChoice::Path(p) => {
                return Ok(match disks.iter().find(|d| d.device() == *p) {
                    Some(d) => Resolved::Disk(d),
                    None => Resolved::Path(p.clone()),
                });
            }
            DiskChoice::Hint(c) => c,
        };
        let mut matching: Vec<&Disk> = disks
            .iter()
            .filter(|d| clauses.iter().all(|c| c.matches(d)))
            .collect();
        if clauses.contains(&Clause::Smallest)
            && let Some(min) = matching.iter().map(|d| d.size_bytes).min()
        {
            matching.retain(|d| d.size_bytes == min);
        }
        let seen = || seen(disks);
        match matching.as_slice() {
            [one] => Ok(Resolved::Disk(one)),
            [] => Err(HintError::Unmatched {
                hint: hint.to_string(),
                seen: seen(),
            }),
            many => Err(HintError::Ambiguous {
                hint: hint.to_string(),
                count: many.len(),
                seen: seen(),
            }),
        }
    }
}

/// What a `disk` value resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved<'a> {
    Disk(&'a Disk),
    /// A device path not in the inventory (a file, or a disk that appears later).
    Path(String),
}

impl Resolved<'_> {
    pub fn device(&self) -> String {
        match self {
            Resolved::Disk(d) => d.device(),
            Resolved::Path(p) => p.clone(),
        }
    }
}

/// `/dev/vda (20 GiB, serial "A", model "M")`, for each disk.
pub fn seen(disks: &[Disk]) -> String {
    if disks.is_empty() {
        return "none".into();
    }
    disks
        .iter()
        .map(|d| {
            format!(
                "{} ({} GiB, serial {:?}, wwn {:?}, model {:?})",
                d.device(),
                d.size_bytes >> 30,
                d.serial,
                d.wwn,
                d.model
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Clause {
    fn matches(&self, d: &Disk) -> bool {
        match self {
            Clause::Smallest => true,
            Clause::Size(op, n) => op.holds(d.size_bytes, *n),
            Clause::Text(field, op, want) => {
                let have = match field {
                    Field::Serial => &d.serial,
                    Field::Wwn => &d.wwn,
                    Field::Model => &d.model,
                    Field::ByPath => &d.by_path,
                    Field::Name => &d.name,
                };
                match op {
                    Cmp::Contains => have.contains(want.as_str()),
                    Cmp::Ne => have != want,
                    _ => have == want,
                }
            }
        }
    }
}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clause::Smallest => f.write_str("smallest"),
            Clause::Size(op, n) => write!(f, "size{}{}", op.symbol(), n),
            Clause::Text(field, op, v) => write!(f, "{field:?}{}{v}", op.symbol()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, serial: &str, gib: u64) -> Disk {
        Disk {
            name: name.into(),
            by_path: format!("pci-{name}"),
            size_bytes: gib << 30,
            model: "QEMU".into(),
            serial: serial.into(),
            wwn: String::new(),
            rotational: false,
            removable: false,
            signatures: vec![],
            partitions: vec![],
        }
    }

    fn pick(hint: &str, disks: &[Disk]) -> Result<String, HintError> {
        DiskChoice::parse(hint)?
            .resolve(hint, disks)
            .map(|r| r.device())
    }

    #[test]
    fn paths_stay_paths() {
        assert_eq!(
            DiskChoice::parse("/dev/sda"),
            Ok(DiskChoice::Path("/dev/sda".into()))
        );
        assert!(DiskChoice::parse("/dev/sda/dev/sdb").is_err());
        assert_eq!(pick("/dev/sdz", &[]), Ok("/dev/sdz".into()));
    }

    #[test]
    fn hints_pick_one_disk() {
        let disks = [
            disk("vda", "VIRTIO-A", 8),
            disk("nvme0n1", "NVME-B", 16),
            disk("sdc", "SATA-C", 16),
        ];
        assert_eq!(pick("serial=NVME-B", &disks), Ok("/dev/nvme0n1".into()));
        assert_eq!(pick("serial s== NVME-B", &disks), Ok("/dev/nvme0n1".into()));
        assert_eq!(pick("smallest", &disks), Ok("/dev/vda".into()));
        assert_eq!(pick("size<10", &disks), Ok("/dev/vda".into()));
        assert_eq!(
            pick("size>=16G&serial<in>SATA", &disks),
            Ok("/dev/sdc".into())
        );
        assert_eq!(pick("by-path=pci-sdc", &disks), Ok("/dev/sdc".into()));
        assert_eq!(pick("/dev/vda", &disks), Ok("/dev/vda".into()));
    }

    #[test]
    fn unmatched_and_ambiguous_name_the_disks_seen() {
        let disks = [
            disk("vda", "A", 8),
            disk("vdb", "B", 16),
            disk("vdc", "C", 16),
        ];
        let e = pick("serial=Z", &disks).unwrap_err();
        assert!(matches!(e, HintError::Unmatched { .. }));
        let text = e.to_string();
        assert!(text.contains("/dev/vda (8 GiB, serial \"A\""), "{text}");
        assert!(text.contains("/dev/vdc"), "{text}");
        let e = pick("size>=10", &disks).unwrap_err();
        assert!(matches!(e, HintError::Ambiguous { count: 2, .. }), "{e}");
        // Two smallest of the same size are ambiguous too.
        let same = [disk("vda", "A", 8), disk("vdb", "B", 8)];
        assert!(matches!(
            pick("smallest", &same),
            Err(HintError::Ambiguous { .. })
        ));
    }

    #[test]
    fn bad_hints_do_not_parse() {
        for bad in [
            "",
            "sda",
            "serial",
            "serial=",
            "colour=red",
            "size>=lots",
            "size<in>5",
            "serial>=A",
            "smallest&",
            "/dev/",
        ] {
            assert!(
                matches!(DiskChoice::parse(bad), Err(HintError::Syntax(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500"), Some(500 << 30));
        assert_eq!(parse_size("500G"), Some(500 << 30));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("5X"), None);
        assert_eq!(parse_size(""), None);
    }
}
