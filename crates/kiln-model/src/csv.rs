//! hardware.csv (the EKS Anywhere format), parsed with the position of every
//! field so that each mistake is reported as `FILE:LINE:COLUMN: field: what`.
//!
//! A small hand-written RFC 4180 reader is used instead of the `csv` crate
//! because we need the line and column where each field starts.
//!
//! The header is read as EKS Anywhere reads it (its `hardware/csv.go`, through
//! gocsv): the required columns must be named; `bmc_ip`, `bmc_username`,
//! `bmc_password` and `vlan_id` may be left out; columns it does not know are
//! ignored (Kiln says so in one warning); a column named twice is read from its
//! last occurrence, except `nameservers`, whose occurrences are joined.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::bmc_address::{PasswordExposure, check_bmc_address, password_exposure};
use crate::hardware::{is_contiguous_netmask, same_subnet};
use crate::labels;
use crate::{BmcEndpoint, Hardware, MacAddr, Secret};

/// Columns every hardware.csv must name in its header (EKS Anywhere's list).
pub const REQUIRED_COLUMNS: [&str; 8] = [
    "hostname",
    "mac",
    "ip_address",
    "netmask",
    "gateway",
    "nameservers",
    "labels",
    "disk",
];
/// Columns that may be left out. Without the BMC columns, machines have no BMC
/// (as in EKS Anywhere's own `hardware_no_bmc_headers.csv`).
pub const OPTIONAL_COLUMNS: [&str; 4] = ["bmc_ip", "bmc_username", "bmc_password", "vlan_id"];

/// Something Kiln read past without refusing the file, located like an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CsvWarning {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for CsvWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: warning: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// A valid file: every row, and what was read past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCsv {
    pub rows: Vec<Row>,
    pub warnings: Vec<CsvWarning>,
}

/// One problem, located in the file (`field`: the column name, empty for the record).
pub type CsvError = crate::Diagnostic;

/// Every problem found in a file; parsing goes on past the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CsvErrors(pub Vec<CsvError>);

impl fmt::Display for CsvErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A field and where it starts (1-based line and character column).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    text: String,
    line: usize,
    column: usize,
}

/// Where a reader is in the text, for positions of fields and errors.
struct Cursor<'t> {
    chars: std::iter::Peekable<std::str::Chars<'t>>,
    line: usize,
    column: usize,
}

/// A reading error: line, column, message.
type ReadError = (usize, usize, String);

impl Cursor<'_> {
    /// Reads a field's value; the cursor is at its first character.
    fn field(&mut self) -> Result<String, ReadError> {
        if self.chars.peek() == Some(&'"') {
            self.quoted()
        } else {
            self.unquoted()
        }
    }

    /// A quoted field: commas, doubled quotes and newlines inside.
    fn quoted(&mut self) -> Result<String, ReadError> {
        let start = (self.line, self.column);
        let mut value = String::new();
        self.chars.next();
        self.column += 1;
        loop {
            match self.chars.next() {
                None => return Err((start.0, start.1, "quoted field is never closed".into())),
                Some('"') if self.chars.peek() == Some(&'"') => {
                    self.chars.next();
                    self.column += 2;
                    value.push('"');
                }
                Some('"') => {
                    self.column += 1;
                    break;
                }
                Some('\n') => {
                    self.line += 1;
                    self.column = 1;
                    value.push('\n');
                }
                Some(c) => {
                    self.column += 1;
                    value.push(c);
                }
            }
        }
        match self.chars.peek() {
            None | Some(',') | Some('\n') | Some('\r') => Ok(value),
            Some(_) => Err((self.line, self.column, "text after a closing quote".into())),
        }
    }

    fn unquoted(&mut self) -> Result<String, ReadError> {
        let mut value = String::new();
        while let Some(&c) = self.chars.peek() {
            if c == ',' || c == '\n' || c == '\r' {
                break;
            }
            if c == '"' {
                return Err((
                    self.line,
                    self.column,
                    "a quote inside an unquoted field".into(),
                ));
            }
            value.push(c);
            self.column += 1;
            self.chars.next();
        }
        Ok(value)
    }

    fn next_line(&mut self) {
        self.line += 1;
        self.column = 1;
    }
}

/// Splits CSV text into records of positioned fields. Quoted fields may hold
/// commas, doubled quotes and newlines. Blank lines are skipped.
fn read_records(text: &str) -> Result<Vec<Vec<Field>>, ReadError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut at = Cursor {
        chars: text.chars().peekable(),
        line: 1,
        column: 1,
    };
    let mut record: Vec<Field> = Vec::new();
    let mut at_field_start = true;
    loop {
        let (line, column) = (at.line, at.column);
        let value = at.field()?;
        let blank_line = at_field_start && record.is_empty() && value.is_empty();
        record.push(Field {
            text: value,
            line,
            column,
        });
        at_field_start = false;
        match at.chars.next() {
            Some(',') => {
                at.column += 1;
            }
            Some('\r') => {
                if at.chars.peek() == Some(&'\n') {
                    at.chars.next();
                }
                finish_record(&mut records, &mut record, blank_line);
                at.next_line();
                at_field_start = true;
            }
            Some('\n') => {
                finish_record(&mut records, &mut record, blank_line);
                at.next_line();
                at_field_start = true;
            }
            None => {
                finish_record(&mut records, &mut record, blank_line);
                return Ok(records);
            }
            Some(_) => unreachable!("field loops stop only at separators"),
        }
    }
}

fn finish_record(records: &mut Vec<Vec<Field>>, record: &mut Vec<Field>, blank_line: bool) {
    let fields = std::mem::take(record);
    if !(blank_line && fields.len() == 1) {
        records.push(fields);
    }
}

/// A valid row and the line it starts on, so later checks (against the store)
/// can still point into the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub line: usize,
    pub hardware: Hardware,
}

/// Parses and validates a whole hardware.csv. Either every row is valid and all
/// machines are returned, or every problem is. Warnings are dropped: callers
/// that show them use [`parse_hardware_csv_rows`].
pub fn parse_hardware_csv(file: &str, text: &str) -> Result<Vec<Hardware>, CsvErrors> {
    Ok(parse_hardware_csv_rows(file, text)?
        .rows
        .into_iter()
        .map(|r| r.hardware)
        .collect())
}

/// As [`parse_hardware_csv`], keeping each row's line and the warnings.
pub fn parse_hardware_csv_rows(file: &str, text: &str) -> Result<ParsedCsv, CsvErrors> {
    let at = Locator { file };
    let records = read_records(text)
        .map_err(|(line, column, message)| CsvErrors(vec![at.err(line, column, "", message)]))?;
    let Some((header, rows)) = records.split_first() else {
        return Err(CsvErrors(vec![at.err(
            1,
            1,
            "",
            "the file is empty: a header line is required".into(),
        )]));
    };
    let (columns, mut warnings) = read_header(&at, header)?;

    let mut errors = Vec::new();
    let mut machines = Vec::new();
    let mut seen = Seen::default();
    for row in rows {
        let line = row[0].line;
        if row.len() != header.len() {
            errors.push(at.err(
                line,
                1,
                "",
                format!(
                    "this row has {} fields, the header has {}",
                    row.len(),
                    header.len()
                ),
            ));
            continue;
        }
        let mut reader = RowReader {
            at: &at,
            columns: &columns,
            row,
            errors: Vec::new(),
        };
        let parsed = reader.read(&mut warnings, &mut seen);
        let mut row_errors = reader.errors;
        match parsed {
            Some(hardware) if row_errors.is_empty() => machines.push(Row { line, hardware }),
            _ => {
                // In the order they appear on the line.
                row_errors.sort_by_key(|e| (e.line, e.column));
                errors.extend(row_errors);
            }
        }
    }
    if rows.is_empty() {
        errors.push(at.err(
            header[0].line,
            1,
            "",
            "no machines: the file has a header but no rows".into(),
        ));
    }
    if errors.is_empty() {
        Ok(ParsedCsv {
            rows: machines,
            warnings,
        })
    } else {
        Err(CsvErrors(errors))
    }
}

/// Builds located errors and warnings for one file.
struct Locator<'a> {
    file: &'a str,
}

impl Locator<'_> {
    fn err(&self, line: usize, column: usize, field: &str, message: String) -> CsvError {
        CsvError {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            message,
        }
    }

    fn warn(&self, f: &Field, message: String) -> CsvWarning {
        CsvWarning {
            file: self.file.to_string(),
            line: f.line,
            column: f.column,
            message,
        }
    }
}

/// The header, read: every position of each known column name, in order.
struct Columns<'a> {
    index: HashMap<&'a str, Vec<usize>>,
}

/// Reads the header: names in any order. Unknown and repeated columns are
/// warned about; a missing required column is an error.
fn read_header<'a>(
    at: &Locator<'_>,
    header: &'a [Field],
) -> Result<(Columns<'a>, Vec<CsvWarning>), CsvErrors> {
    let mut warnings = Vec::new();
    let mut index: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut unknown: Vec<&Field> = Vec::new();
    for (i, f) in header.iter().enumerate() {
        let name = f.text.trim();
        if REQUIRED_COLUMNS.contains(&name) || OPTIONAL_COLUMNS.contains(&name) {
            index.entry(name).or_default().push(i);
        } else if !unknown.iter().any(|u| u.text.trim() == name) {
            unknown.push(f);
        }
    }
    let unknown_names = unknown
        .iter()
        .map(|f| format!("{:?}", f.text.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    if let Some(first) = unknown.first() {
        warnings.push(at.warn(
            first,
            format!(
                "ignoring unknown column{} {unknown_names} (EKS Anywhere ignores them too)",
                if unknown.len() > 1 { "s" } else { "" }
            ),
        ));
    }
    warnings.extend(repeated_column_warnings(at, header, &index));
    warnings.sort_by_key(|w| (w.line, w.column));
    let errors: Vec<CsvError> = REQUIRED_COLUMNS
        .iter()
        .filter(|name| !index.contains_key(*name))
        .map(|name| {
            let hint = if unknown.is_empty() {
                String::new()
            } else {
                format!(" (the header's unknown columns: {unknown_names})")
            };
            at.err(
                header[0].line,
                1,
                "",
                format!("the header lacks the required column {name:?}{hint}"),
            )
        })
        .collect();
    if !errors.is_empty() {
        return Err(CsvErrors(errors));
    }
    Ok((Columns { index }, warnings))
}

/// One warning per column named more than once, at its last occurrence.
fn repeated_column_warnings(
    at: &Locator<'_>,
    header: &[Field],
    index: &HashMap<&str, Vec<usize>>,
) -> Vec<CsvWarning> {
    let mut warnings = Vec::new();
    for name in REQUIRED_COLUMNS.iter().chain(&OPTIONAL_COLUMNS) {
        let Some(at_positions) = index.get(name).filter(|at| at.len() > 1) else {
            continue;
        };
        let last = &header[*at_positions.last().expect("more than one")];
        let how = if *name == "nameservers" {
            "the nameservers of all of them are used".to_string()
        } else {
            format!("only the last one (column {}) is read", last.column)
        };
        warnings.push(at.warn(
            last,
            format!(
                "column {name:?} appears {} times; {how}, as EKS Anywhere does",
                at_positions.len()
            ),
        ));
    }
    warnings
}

/// First line each unique value was seen on, to name both places in a clash.
#[derive(Default)]
struct Seen(HashMap<(&'static str, String), usize>);

/// The network settings of a row, each `None` when invalid (gateway: also when empty).
struct Addressing {
    ip: Option<Ipv4Addr>,
    netmask: Option<Ipv4Addr>,
    gateway: Option<Ipv4Addr>,
}

/// Reads one row of the right length, collecting its errors.
struct RowReader<'a> {
    at: &'a Locator<'a>,
    columns: &'a Columns<'a>,
    row: &'a [Field],
    errors: Vec<CsvError>,
}

impl<'a> RowReader<'a> {
    /// The machine in this row; `None` (or errors left in `self.errors`) if it is invalid.
    fn read(&mut self, warnings: &mut Vec<CsvWarning>, seen: &mut Seen) -> Option<Hardware> {
        let line = self.row[0].line;
        let host_f = self.required("hostname");
        let hostname = self.hostname(host_f);
        let mac_f = self.required("mac");
        let mac = self.mac(mac_f);
        let ip_f = self.required("ip_address");
        let addressing = self.addressing(ip_f);
        let nameservers = self.nameservers();
        let labels_f = self.required("labels");
        let label_map = self.labels(labels_f);
        let disk = self.disk();
        let vlan_id = self.vlan_id();
        let bmc_ip_f = self.cell("bmc_ip");
        let bmc = self.bmc();

        // A password readable on the network: enrolled, but said, once per machine.
        if let (Some(bmc), Some(ip_f)) = (&bmc, bmc_ip_f)
            && let Some(exposure) = password_exposure(&bmc.address, &label_map)
        {
            let at = match exposure {
                PasswordExposure::PlainHttp => ip_f,
                PasswordExposure::UnverifiedTls => labels_f,
            };
            warnings.push(self.at.warn(at, exposure.warning(&hostname, &bmc.address)));
        }

        // Uniqueness across rows.
        self.unique(seen, line, "hostname", hostname.clone(), host_f);
        if let Some(m) = mac {
            self.unique(seen, line, "mac", m.to_string(), mac_f);
        }
        if let Some(ip) = addressing.ip {
            self.unique(seen, line, "ip_address", ip.to_string(), ip_f);
        }
        if let (Some(bmc), Some(f)) = (&bmc, bmc_ip_f) {
            self.unique(seen, line, "bmc_ip", bmc.address.clone(), f);
        }

        Some(Hardware {
            hostname,
            mac: mac?,
            ip: addressing.ip?,
            netmask: addressing.netmask?,
            gateway: addressing.gateway,
            nameservers,
            labels: label_map,
            disk,
            vlan_id,
            bmc,
            netboot: false,
        })
    }

    /// A column's cell; a column named twice is read from its last occurrence.
    fn cell(&self, name: &str) -> Option<&'a Field> {
        self.columns
            .index
            .get(name)
            .and_then(|at| at.last())
            .map(|&i| &self.row[i])
    }

    fn required(&self, name: &str) -> &'a Field {
        self.cell(name).expect("required columns were checked")
    }

    fn bad(&mut self, f: &Field, name: &str, msg: String) {
        self.errors.push(self.at.err(f.line, f.column, name, msg));
    }

    fn unique(
        &mut self,
        seen: &mut Seen,
        line: usize,
        key: &'static str,
        value: String,
        f: &Field,
    ) {
        if let Some(first) = seen.0.get(&(key, value.clone())) {
            let message = format!("{value} is already used on line {first}");
            self.bad(f, key, message);
        } else {
            seen.0.insert((key, value), line);
        }
    }

    fn hostname(&mut self, host_f: &Field) -> String {
        let hostname = host_f.text.trim().to_string();
        if !labels::is_dns_subdomain(&hostname) {
            self.bad(
                host_f,
                "hostname",
                format!(
                    "{hostname:?} is not a valid hostname (lower-case letters, digits, '-' and '.', as in RFC 1123)"
                ),
            );
        }
        hostname
    }

    fn mac(&mut self, mac_f: &Field) -> Option<MacAddr> {
        match mac_f.text.trim().parse::<MacAddr>() {
            Ok(m) => Some(m),
            Err(e) => {
                self.bad(mac_f, "mac", e.to_string());
                None
            }
        }
    }

    fn ipv4(&mut self, f: &Field, name: &str) -> Option<Ipv4Addr> {
        match f.text.trim().parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.bad(
                    f,
                    name,
                    format!("{:?} is not an IPv4 address", f.text.trim()),
                );
                None
            }
        }
    }

    /// ip_address, netmask and gateway, and that the gateway is in the subnet.
    fn addressing(&mut self, ip_f: &Field) -> Addressing {
        let ip = self.ipv4(ip_f, "ip_address");
        let mask_f = self.required("netmask");
        let netmask = self.ipv4(mask_f, "netmask").and_then(|m| {
            if is_contiguous_netmask(m) {
                Some(m)
            } else {
                self.bad(
                    mask_f,
                    "netmask",
                    format!("{m} is not a contiguous netmask (like 255.255.255.0)"),
                );
                None
            }
        });
        let gw_f = self.required("gateway");
        let gateway = if gw_f.text.trim().is_empty() {
            None
        } else {
            self.ipv4(gw_f, "gateway")
        };
        if let (Some(ip), Some(mask), Some(gw)) = (ip, netmask, gateway)
            && !same_subnet(ip, gw, mask)
        {
            self.bad(
                gw_f,
                "gateway",
                format!(
                    "{gw} is not in the machine's subnet {ip}/{}",
                    u32::from(mask).count_ones()
                ),
            );
        }
        Addressing {
            ip,
            netmask,
            gateway,
        }
    }

    /// An empty cell: no nameservers (Kiln's provisioning networks may have
    /// none). Otherwise, as in EKS Anywhere, no entry may be empty.
    fn nameservers(&mut self) -> Vec<Ipv4Addr> {
        let mut nameservers = Vec::new();
        for &i in &self.columns.index["nameservers"] {
            let ns_f = &self.row[i];
            if ns_f.text.trim().is_empty() {
                continue;
            }
            for part in ns_f.text.split('|').map(str::trim) {
                match part.parse::<Ipv4Addr>() {
                    Ok(a) => nameservers.push(a),
                    Err(_) if part.is_empty() => self.bad(
                        ns_f,
                        "nameservers",
                        "an entry is empty (separate nameservers with '|', none at either end)"
                            .into(),
                    ),
                    Err(_) => self.bad(
                        ns_f,
                        "nameservers",
                        format!("{part:?} is not an IPv4 address (separate nameservers with '|')"),
                    ),
                }
            }
        }
        nameservers
    }

    fn labels(&mut self, labels_f: &Field) -> BTreeMap<String, String> {
        let mut label_map = BTreeMap::new();
        let labels_text = labels_f.text.trim();
        for part in labels_text
            .split('|')
            .map(str::trim)
            .filter(|_| !labels_text.is_empty())
        {
            // EKS Anywhere: exactly one '=' per pair, no empty pair.
            let Some((k, v)) = part.split_once('=').filter(|(_, v)| !v.contains('=')) else {
                self.bad(
                    labels_f,
                    "labels",
                    format!(
                        "{part:?} is not key=value (separate labels with '|', none at either end)"
                    ),
                );
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if let Err(why) = labels::check_key(k).and_then(|_| labels::check_value(v)) {
                self.bad(labels_f, "labels", why);
            } else if label_map.insert(k.to_string(), v.to_string()).is_some() {
                self.bad(labels_f, "labels", format!("label {k:?} is given twice"));
            }
        }
        label_map
    }

    fn disk(&mut self) -> String {
        let disk_f = self.required("disk");
        let disk = disk_f.text.trim().to_string();
        // A device path (EKS Anywhere's rule), or, as a Kiln extension, a root device hint
        // the agent resolves against its inventory (`serial=…`, `size>=500`, `smallest`).
        if !is_device_path(&disk)
            && let Err(e) = kiln_api::disk_hint::DiskChoice::parse(&disk)
        {
            self.bad(disk_f, "disk", e.to_string());
        }
        disk
    }

    fn vlan_id(&mut self) -> Option<u16> {
        let f = self.cell("vlan_id").filter(|f| !f.text.trim().is_empty())?;
        match f.text.trim().parse::<u16>() {
            Ok(v) if (1..=4094).contains(&v) => Some(v),
            _ => {
                self.bad(
                    f,
                    "vlan_id",
                    format!("{:?} is not a VLAN id (1 to 4094)", f.text.trim()),
                );
                None
            }
        }
    }

    /// The BMC columns may be missing; a missing column reads as empty cells.
    /// As in EKS Anywhere, a machine has a BMC when any of the three is set,
    /// and then needs all three.
    fn bmc(&mut self) -> Option<BmcEndpoint> {
        let (bmc_ip_f, user_f, pass_f) = (
            self.cell("bmc_ip"),
            self.cell("bmc_username"),
            self.cell("bmc_password"),
        );
        let bmc_address = bmc_ip_f.map_or("", |f| f.text.trim());
        let username = user_f.map_or("", |f| f.text.trim());
        // Never trimmed, never echoed.
        let password = pass_f.map_or("", |f| f.text.as_str());
        let credentials = [
            (user_f, "bmc_username", username),
            (pass_f, "bmc_password", password),
        ];
        if bmc_address.is_empty() {
            let set = credentials
                .into_iter()
                .find(|(_, _, value)| !value.is_empty());
            if let Some((Some(f), name, _)) = set {
                self.bad(
                    bmc_ip_f.unwrap_or(f),
                    "bmc_ip",
                    format!(
                        "required when {name} is set (leave bmc_ip, bmc_username and bmc_password all empty for a machine without a BMC)"
                    ),
                );
            }
            return None;
        }
        let bmc_ip_f = bmc_ip_f.expect("a non-empty cell has a column");
        if let Err(why) = check_bmc_address(bmc_address) {
            self.bad(bmc_ip_f, "bmc_ip", why);
        }
        for (f, name, value) in credentials {
            if value.is_empty() {
                let why = if f.is_some() {
                    ""
                } else {
                    " (the header has no such column)"
                };
                self.bad(
                    f.unwrap_or(bmc_ip_f),
                    name,
                    format!("required when bmc_ip is set{why}"),
                );
            }
        }
        Some(BmcEndpoint {
            address: bmc_address.to_string(),
            username: username.to_string(),
            password: Secret::new(password.to_string()),
        })
    }
}

/// EKS Anywhere's disk rule, `^(/dev/[\w-]+)+$`, for one device: `/dev/` then
/// ASCII letters, digits, '_' and '-'. (Its regex also matches `/dev/a/dev/b`,
/// which names no device; Kiln refuses that.)
fn is_device_path(disk: &str) -> bool {
    disk.strip_prefix("/dev/").is_some_and(|name| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk";

    fn parse(body: &str) -> Result<Vec<Hardware>, CsvErrors> {
        parse_hardware_csv("hw.csv", &format!("{HEADER}\n{body}"))
    }

    #[test]
    fn parses_the_eksa_example() {
        let hw = parse(
            "eksa-node01,10.10.44.1,root,Pa$$w0rd,CC:48:3A:00:00:01,10.10.50.2,255.255.254.0,10.10.50.1,8.8.8.8|1.1.1.1,type=cp,/dev/sda\n",
        )
        .unwrap();
        assert_eq!(hw.len(), 1);
        let m = &hw[0];
        assert_eq!(m.hostname, "eksa-node01");
        assert_eq!(m.mac.to_string(), "cc:48:3a:00:00:01");
        assert_eq!(m.nameservers.len(), 2);
        assert_eq!(m.labels.get("type").map(String::as_str), Some("cp"));
        assert_eq!(m.bmc.as_ref().unwrap().password.expose(), "Pa$$w0rd");
        assert!(!m.netboot);
    }

    #[test]
    fn columns_in_any_order_with_vlan_and_quotes() {
        let text = "mac,hostname,ip_address,netmask,gateway,nameservers,labels,disk,bmc_ip,bmc_username,bmc_password,vlan_id\r\n\
                    aa:bb:cc:dd:ee:01,n1,10.0.0.5,255.255.255.0,,\"8.8.8.8\",\"a=b|c=d\",/dev/nvme0n1,ipmi://10.1.0.5:623,admin,\"p,\"\"q\",42\r\n";
        let hw = parse_hardware_csv("x.csv", text).unwrap();
        assert_eq!(hw[0].vlan_id, Some(42));
        assert_eq!(hw[0].gateway, None);
        assert_eq!(hw[0].bmc.as_ref().unwrap().password.expose(), "p,\"q");
        assert_eq!(hw[0].labels.len(), 2);
    }

    #[test]
    fn reports_every_error_with_position() {
        let errs = parse(
            "Bad_Host,,,,zz:bb:cc:dd:ee:ff,10.0.0.300,255.0.255.0,10.0.0.1,8.8.8.8,type=cp,/dev/sda\n\
             ok,,,,aa:bb:cc:dd:ee:ff,10.0.0.2,255.255.255.0,10.9.0.1,x,=v,sda\n",
        )
        .unwrap_err()
        .0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let expect = [
            "hw.csv:2:1: hostname:",
            "hw.csv:2:13: mac:",
            "hw.csv:2:31: ip_address:",
            "hw.csv:2:42: netmask:",
            "hw.csv:3:48: gateway:",
            "hw.csv:3:57: nameservers:",
            "hw.csv:3:59: labels:",
            "hw.csv:3:62: disk:",
        ];
        for prefix in expect {
            assert!(
                shown.iter().any(|s| s.starts_with(prefix)),
                "missing {prefix} in {shown:#?}"
            );
        }
        assert_eq!(shown.len(), expect.len(), "{shown:#?}");
    }

    #[test]
    fn duplicates_name_the_first_line() {
        let errs = parse(
            "n1,,,,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,,,/dev/sda\n\
             n1,,,,AA:BB:CC:DD:EE:01,10.0.0.2,255.255.255.0,,,,/dev/sda\n",
        )
        .unwrap_err()
        .0;
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(
            errs.iter()
                .all(|e| e.line == 3 && e.message.contains("line 2"))
        );
    }

    #[test]
    fn bmc_credentials_required_and_password_never_echoed() {
        let errs = parse("n1,10.1.0.1,,,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,,,/dev/sda\n")
            .unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("bmc_username: required"), "{text}");
        assert!(text.contains("bmc_password: required"), "{text}");
        let errs =
            parse("n1,ftp://x,u,s3cret,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,,,/dev/sda\n")
                .unwrap_err();
        assert!(!errs.to_string().contains("s3cret"));
    }

    #[test]
    fn header_problems() {
        let errs = parse_hardware_csv("h.csv", "hostname,mac,colour\n")
            .unwrap_err()
            .0;
        // The missing required columns are named, each once, with the unknown
        // column as a hint (a misspelling is the usual cause).
        for name in [
            "ip_address",
            "netmask",
            "gateway",
            "nameservers",
            "labels",
            "disk",
        ] {
            let hits: Vec<_> = errs
                .iter()
                .filter(|e| e.message.contains(&format!("required column {name:?}")))
                .collect();
            assert_eq!(hits.len(), 1, "{name}: {errs:#?}");
            assert!(hits[0].message.contains("\"colour\""), "{hits:?}");
            assert_eq!((hits[0].line, hits[0].column), (1, 1));
        }
        assert_eq!(errs.len(), 6, "{errs:#?}");
        assert!(parse_hardware_csv("h.csv", "").is_err());
        assert!(parse_hardware_csv("h.csv", &format!("{HEADER}\n")).is_err());
    }

    #[test]
    fn wrong_field_count_and_unclosed_quote() {
        let errs = parse("a,b\n").unwrap_err().0;
        assert!(errs[0].message.contains("2 fields"));
        let errs = parse("\"oops\n").unwrap_err().0;
        assert_eq!((errs[0].line, errs[0].column), (2, 1));
    }

    fn rows(file: &str, text: &str) -> ParsedCsv {
        parse_hardware_csv_rows(file, text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn eksa_testdata_with_and_without_bmc_columns() {
        // EKS Anywhere's pkg/providers/tinkerbell/hardware/testdata, byte for
        // byte (no newline at the end).
        let with = rows(
            "hardware.csv",
            "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
             worker1,192.168.0.10,Admin,admin,00:00:00:00:00:01,10.10.10.10,255.255.255.0,10.10.10.1,1.1.1.1,type=cp,/dev/sda",
        );
        let bmc = with.rows[0].hardware.bmc.as_ref().expect("a BMC");
        assert_eq!(bmc.address, "192.168.0.10");
        assert_eq!(bmc.username, "Admin");
        assert!(with.warnings.is_empty());

        let without = rows(
            "hardware_no_bmc_headers.csv",
            "hostname,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
             worker1,00:00:00:00:00:01,10.10.10.10,255.255.255.0,10.10.10.1,1.1.1.1,type=cp,/dev/sda",
        );
        assert!(without.warnings.is_empty(), "{:?}", without.warnings);
        let m = &without.rows[0].hardware;
        assert_eq!(m.bmc, None);
        assert_eq!(m.hostname, "worker1");
        assert_eq!(m.mac.to_string(), "00:00:00:00:00:01");
        assert_eq!(m.gateway, Some(Ipv4Addr::new(10, 10, 10, 1)));
        assert_eq!(m.nameservers, [Ipv4Addr::new(1, 1, 1, 1)]);
        assert_eq!(m.disk, "/dev/sda");
    }

    #[test]
    fn vlan_id_alone_without_bmc_columns() {
        let parsed = rows(
            "v.csv",
            "hostname,mac,ip_address,netmask,gateway,nameservers,labels,disk,vlan_id\n\
             n1,00:00:00:00:00:01,10.10.10.10,255.255.255.0,,,,/dev/sda,200\n",
        );
        assert_eq!(parsed.rows[0].hardware.vlan_id, Some(200));
        assert_eq!(parsed.rows[0].hardware.bmc, None);
    }

    #[test]
    fn unknown_columns_are_ignored_with_one_warning() {
        // EKS Anywhere's test/e2e README example (its first row), plus a notes
        // column holding what would be bad values in a known column.
        let parsed = rows(
            "inv.csv",
            "ip_address,gateway,nameservers,netmask,mac,hostname,vendor,bmc_ip,bmc_username,bmc_password,labels,disk,notes\n\
             10.24.32.110,10.24.32.1,8.8.8.8,255.255.255.0,3c:ec:ef:6e:a4:82,eksa-node01,supermicro,10.24.32.10,admin,password,type=cp,/dev/sda,\"rack 4, slot 2\"\n\
             10.24.32.111,10.24.32.1,8.8.8.8,255.255.255.0,3c:ec:ef:6e:a5:7c,eksa-node02,,,,,type=worker,/dev/sda,not|a=label\n",
        );
        assert_eq!(parsed.rows.len(), 2);
        assert_eq!(parsed.rows[0].hardware.hostname, "eksa-node01");
        assert!(parsed.rows[0].hardware.bmc.is_some());
        assert_eq!(parsed.rows[1].hardware.bmc, None);
        assert_eq!(parsed.warnings.len(), 1, "{:?}", parsed.warnings);
        let w = &parsed.warnings[0];
        // At the first unknown column: "vendor" starts at character 53.
        assert_eq!((w.line, w.column), (1, 53));
        assert_eq!(
            w.to_string(),
            "inv.csv:1:53: warning: ignoring unknown columns \"vendor\", \"notes\" (EKS Anywhere ignores them too)"
        );
    }

    #[test]
    fn an_empty_bmc_ip_cell_means_no_bmc_unless_credentials_are_given() {
        let parsed = parse("n1,,,,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,,,/dev/sda\n").unwrap();
        assert_eq!(parsed[0].bmc, None);
        // EKS Anywhere: any BMC field set means a BMC, so its address is needed.
        let errs = parse("n1,,admin,,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,,,/dev/sda\n")
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(
            (errs[0].line, errs[0].column, errs[0].field.as_str()),
            (2, 4, "bmc_ip")
        );
        assert!(
            errs[0]
                .message
                .contains("required when bmc_username is set"),
            "{}",
            errs[0]
        );
        let errs = parse("n1,,,hunter2,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,,,/dev/sda\n")
            .unwrap_err();
        assert!(
            errs.to_string()
                .contains("required when bmc_password is set"),
            "{errs}"
        );
        assert!(!errs.to_string().contains("hunter2"));
    }

    #[test]
    fn bmc_credentials_without_their_columns() {
        let text = "hostname,bmc_ip,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
                    n1,10.1.0.1,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,,,/dev/sda\n\
                    n2,,aa:bb:cc:dd:ee:02,10.0.0.3,255.255.255.0,,,,/dev/sda\n";
        let errs = parse_hardware_csv("b.csv", text).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            [
                "b.csv:2:4: bmc_username: required when bmc_ip is set (the header has no such column)",
                "b.csv:2:4: bmc_password: required when bmc_ip is set (the header has no such column)",
            ]
        );
    }

    #[test]
    fn bmc_ip_placeholder_is_refused_at_its_position() {
        let errs = parse(
            "n1,BMCIP,admin,pw,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,,,/dev/sda\n\
             n2,my-bmc,admin,pw,aa:bb:cc:dd:ee:02,10.0.0.3,255.255.255.0,,,,/dev/sda\n\
             n3,ipmi://my-bmc:623,admin,pw,aa:bb:cc:dd:ee:03,10.0.0.4,255.255.255.0,,,,/dev/sda\n\
             n4,redfish+https://idrac-4.example,admin,pw,aa:bb:cc:dd:ee:04,10.0.0.5,255.255.255.0,,,,/dev/sda\n",
        )
        .unwrap_err()
        .0;
        assert_eq!(errs.len(), 2, "{errs:#?}");
        let first = errs[0].to_string();
        assert!(
            first.starts_with(
                "hw.csv:2:4: bmc_ip: \"BMCIP\" is not an IP address: expected an IP address"
            ),
            "{first}"
        );
        assert!(first.contains("ipmi://HOST[:PORT]"), "{first}");
        assert!(
            errs[1]
                .to_string()
                .starts_with("hw.csv:3:4: bmc_ip: \"my-bmc\" is not an IP address"),
            "{}",
            errs[1]
        );
    }

    #[test]
    fn macs_in_every_go_spelling_are_stored_lower_case_with_colons() {
        let parsed = parse(
            "n1,,,,AA-BB-CC-DD-EE-01,10.0.0.2,255.255.255.0,,,,/dev/sda\n\
             n2,,,,aabb.ccdd.ee02,10.0.0.3,255.255.255.0,,,,/dev/sda\n\
             n3,,,,AABB.CCDD.EE03,10.0.0.4,255.255.255.0,,,,/dev/sda\n\
             n4,,,,Aa:bB:cc:dd:ee:04,10.0.0.5,255.255.255.0,,,,/dev/sda\n",
        )
        .unwrap();
        let macs: Vec<String> = parsed.iter().map(|m| m.mac.to_string()).collect();
        assert_eq!(
            macs,
            [
                "aa:bb:cc:dd:ee:01",
                "aa:bb:cc:dd:ee:02",
                "aa:bb:cc:dd:ee:03",
                "aa:bb:cc:dd:ee:04"
            ]
        );
        // One machine in two spellings is one MAC.
        let errs = parse(
            "n1,,,,aabb.ccdd.ee01,10.0.0.2,255.255.255.0,,,,/dev/sda\n\
             n2,,,,AA-BB-CC-DD-EE-01,10.0.0.3,255.255.255.0,,,,/dev/sda\n",
        )
        .unwrap_err();
        assert_eq!(
            errs.to_string(),
            "hw.csv:3:7: mac: aa:bb:cc:dd:ee:01 is already used on line 2"
        );
    }

    #[test]
    fn macs_go_refuses_or_that_are_not_ethernet() {
        let errs = parse(
            "n1,,,,a:b:c:d:e:1,10.0.0.2,255.255.255.0,,,,/dev/sda\n\
             n2,,,,aa:bb-cc:dd:ee:02,10.0.0.3,255.255.255.0,,,,/dev/sda\n\
             n3,,,,00:00:5e:00:53:01:00:03,10.0.0.4,255.255.255.0,,,,/dev/sda\n",
        )
        .unwrap_err()
        .0;
        let at: Vec<(usize, usize, &str)> = errs
            .iter()
            .map(|e| (e.line, e.column, e.field.as_str()))
            .collect();
        assert_eq!(at, [(2, 7, "mac"), (3, 7, "mac"), (4, 7, "mac")]);
        assert!(errs[0].message.contains("not a MAC address"));
        assert!(errs[2].message.contains("8-octet"), "{}", errs[2]);
    }

    #[test]
    fn a_column_named_twice_is_read_as_eksa_reads_it() {
        let text = "hostname,mac,ip_address,netmask,gateway,nameservers,labels,disk,disk,nameservers\n\
                    n1,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,8.8.8.8,,/dev/sda,/dev/nvme0n1,1.1.1.1|9.9.9.9\n";
        let parsed = rows("d.csv", text);
        let m = &parsed.rows[0].hardware;
        assert_eq!(m.disk, "/dev/nvme0n1");
        assert_eq!(
            m.nameservers,
            [
                Ipv4Addr::new(8, 8, 8, 8),
                Ipv4Addr::new(1, 1, 1, 1),
                Ipv4Addr::new(9, 9, 9, 9)
            ]
        );
        let shown: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            shown,
            [
                "d.csv:1:65: warning: column \"disk\" appears 2 times; only the last one (column 65) is read, as EKS Anywhere does",
                "d.csv:1:70: warning: column \"nameservers\" appears 2 times; the nameservers of all of them are used, as EKS Anywhere does",
            ]
        );
    }

    #[test]
    fn empty_entries_in_nameservers_and_labels_are_refused_as_in_eksa() {
        let errs = parse(
            "n1,,,,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,8.8.8.8|,type=cp,/dev/sda\n\
             n2,,,,aa:bb:cc:dd:ee:02,10.0.0.3,255.255.255.0,,8.8.8.8,type=cp|,/dev/sda\n\
             n3,,,,aa:bb:cc:dd:ee:03,10.0.0.4,255.255.255.0,,8.8.8.8,a=b=c,/dev/sda\n",
        )
        .unwrap_err()
        .0;
        let at: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(at, [(2, "nameservers"), (3, "labels"), (4, "labels")]);
        // An empty cell is no nameservers and no labels.
        let m =
            &parse("n1,,,,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,  ,  ,/dev/sda\n").unwrap()[0];
        assert!(m.nameservers.is_empty() && m.labels.is_empty());
    }

    #[test]
    fn disk_follows_eksa_device_path_rule() {
        for ok in ["/dev/sda", "/dev/nvme0n1", "/dev/vd_b", "/dev/md-0"] {
            assert!(is_device_path(ok), "{ok}");
        }
        for bad in [
            "sda",
            "/dev/",
            "/dev/disk/by-id/wwn-0x5000",
            "/dev/sda/dev/sdb",
            "/dev/sda1;reboot",
            "/dev/sda 1",
            "/dev/../etc/passwd",
        ] {
            assert!(!is_device_path(bad), "{bad}");
        }
    }

    #[test]
    fn disk_may_be_a_root_device_hint() {
        let row = |disk: &str| {
            parse(&format!(
                "n1,,,,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,10.0.0.1,,,{disk}\n"
            ))
        };
        for ok in ["serial=S123", "size>=500&model<in>Samsung", "smallest"] {
            assert_eq!(row(ok).unwrap()[0].disk, ok);
        }
        let errs = row("colour=red").unwrap_err().0;
        assert_eq!(errs[0].field, "disk");
        assert!(errs[0].message.contains("disk hint"), "{}", errs[0].message);
        assert_eq!((errs[0].line, errs[0].column), (2, 59));
    }

    #[test]
    fn a_row_s_problems_come_in_column_order() {
        let errs =
            parse("n1,BMCIP,u,p,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,10.9.0.1,,,/dev/sda\n")
                .unwrap_err()
                .0;
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["bmc_ip", "gateway"]);
    }

    #[test]
    fn bmcs_whose_passwords_travel_readable_get_one_warning_each() {
        let text = format!(
            "{HEADER}\n\
             n1,redfish+http://10.0.0.21:8000,admin,pw1,aa:bb:cc:dd:ee:01,10.0.0.2,255.255.255.0,,,,/dev/sda\n\
             n2,redfish+https://10.0.0.22,admin,pw2,aa:bb:cc:dd:ee:02,10.0.0.3,255.255.255.0,,,type=cp|kiln.dev/bmc-tls=insecure,/dev/sda\n\
             n3,redfish+https://10.0.0.23,admin,pw3,aa:bb:cc:dd:ee:03,10.0.0.4,255.255.255.0,,,,/dev/sda\n\
             n4,ipmi://10.0.0.24,admin,pw4,aa:bb:cc:dd:ee:04,10.0.0.5,255.255.255.0,,,kiln.dev/bmc-tls=insecure,/dev/sda\n\
             n5,redfish+http://127.0.0.1:8001,admin,pw5,aa:bb:cc:dd:ee:05,10.0.0.6,255.255.255.0,,,,/dev/sda\n"
        );
        let parsed = parse_hardware_csv_rows("h.csv", &text).unwrap();
        assert_eq!(parsed.rows.len(), 5);
        let shown: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            shown,
            [
                "h.csv:2:4: warning: n1: BMC redfish+http://10.0.0.21:8000 is reached over plain HTTP: its password travels readable (use redfish+https://)",
                "h.csv:3:83: warning: n2: BMC redfish+https://10.0.0.22 is reached without certificate verification (kiln.dev/bmc-tls=insecure): its password travels readable to whoever answers in the BMC's place",
            ]
        );
        assert!(!shown.concat().contains("pw"), "{shown:?}");
    }
}
