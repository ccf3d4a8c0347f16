//! hardware.csv (the EKS Anywhere format), parsed with the position of every
//! field so that each mistake is reported as `FILE:LINE:COLUMN: field: what`.
//!
//! A small hand-written RFC 4180 reader is used instead of the `csv` crate
//! because we need the line and column where each field starts.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use crate::hardware::{is_contiguous_netmask, same_subnet};
use crate::labels;
use crate::{BmcEndpoint, Hardware, MacAddr, Secret};

/// Columns every hardware.csv must name in its header.
pub const REQUIRED_COLUMNS: [&str; 11] = [
    "hostname",
    "bmc_ip",
    "bmc_username",
    "bmc_password",
    "mac",
    "ip_address",
    "netmask",
    "gateway",
    "nameservers",
    "labels",
    "disk",
];
pub const OPTIONAL_COLUMNS: [&str; 1] = ["vlan_id"];

/// One problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The column name (empty for problems with the record as a whole).
    pub field: String,
    pub message: String,
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

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

/// Splits CSV text into records of positioned fields. Quoted fields may hold
/// commas, doubled quotes and newlines. Blank lines are skipped.
fn read_records(text: &str) -> Result<Vec<Vec<Field>>, (usize, usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let (mut line, mut column) = (1usize, 1usize);
    let mut record: Vec<Field> = Vec::new();
    let mut at_field_start = true;
    loop {
        // Start of a field.
        let start = (line, column);
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            column += 1;
            loop {
                match chars.next() {
                    None => return Err((start.0, start.1, "quoted field is never closed".into())),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        column += 2;
                        value.push('"');
                    }
                    Some('"') => {
                        column += 1;
                        break;
                    }
                    Some('\n') => {
                        line += 1;
                        column = 1;
                        value.push('\n');
                    }
                    Some(c) => {
                        column += 1;
                        value.push(c);
                    }
                }
            }
            match chars.peek() {
                None | Some(',') | Some('\n') | Some('\r') => {}
                Some(_) => return Err((line, column, "text after a closing quote".into())),
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '\n' || c == '\r' {
                    break;
                }
                if c == '"' {
                    return Err((line, column, "a quote inside an unquoted field".into()));
                }
                value.push(c);
                column += 1;
                chars.next();
            }
        }
        let blank_line = at_field_start && record.is_empty() && value.is_empty();
        record.push(Field {
            text: value,
            line: start.0,
            column: start.1,
        });
        at_field_start = false;
        match chars.next() {
            Some(',') => {
                column += 1;
            }
            Some('\r') => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                finish_record(&mut records, &mut record, blank_line);
                line += 1;
                column = 1;
                at_field_start = true;
            }
            Some('\n') => {
                finish_record(&mut records, &mut record, blank_line);
                line += 1;
                column = 1;
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
/// machines are returned, or every problem is.
pub fn parse_hardware_csv(file: &str, text: &str) -> Result<Vec<Hardware>, CsvErrors> {
    Ok(parse_hardware_csv_rows(file, text)?
        .into_iter()
        .map(|r| r.hardware)
        .collect())
}

/// As [`parse_hardware_csv`], keeping each row's line.
pub fn parse_hardware_csv_rows(file: &str, text: &str) -> Result<Vec<Row>, CsvErrors> {
    let mut errors = Vec::new();
    let err = |line, column, field: &str, message: String| CsvError {
        file: file.to_string(),
        line,
        column,
        field: field.to_string(),
        message,
    };
    let records = match read_records(text) {
        Ok(r) => r,
        Err((line, column, message)) => {
            return Err(CsvErrors(vec![err(line, column, "", message)]));
        }
    };
    let Some((header, rows)) = records.split_first() else {
        return Err(CsvErrors(vec![err(
            1,
            1,
            "",
            "the file is empty: a header line is required".into(),
        )]));
    };

    // Header: names in any order, each once, all required ones present.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, f) in header.iter().enumerate() {
        let name = f.text.trim();
        if !REQUIRED_COLUMNS.contains(&name) && !OPTIONAL_COLUMNS.contains(&name) {
            errors.push(err(
                f.line,
                f.column,
                "",
                format!("unknown column {name:?}"),
            ));
        } else if index.insert(name, i).is_some() {
            errors.push(err(
                f.line,
                f.column,
                "",
                format!("column {name:?} appears twice"),
            ));
        }
    }
    for name in REQUIRED_COLUMNS {
        if !index.contains_key(name) {
            errors.push(err(
                header[0].line,
                1,
                "",
                format!("the header lacks the required column {name:?}"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(CsvErrors(errors));
    }

    let mut machines = Vec::new();
    // First line each unique value was seen on, to name both places in a clash.
    let mut seen: HashMap<(&str, String), usize> = HashMap::new();
    for row in rows {
        let line = row[0].line;
        if row.len() != header.len() {
            errors.push(err(
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
        let mut row_errors = Vec::new();
        let get = |name: &str| -> Option<&Field> { index.get(name).map(|&i| &row[i]) };
        let mut bad =
            |f: &Field, name: &str, msg: String| row_errors.push(err(f.line, f.column, name, msg));

        macro_rules! field {
            ($name:expr) => {
                get($name).expect("required columns were checked")
            };
        }

        let host_f = field!("hostname");
        let hostname = host_f.text.trim().to_string();
        if !labels::is_dns_subdomain(&hostname) {
            bad(
                host_f,
                "hostname",
                format!(
                    "{hostname:?} is not a valid hostname (lower-case letters, digits, '-' and '.', as in RFC 1123)"
                ),
            );
        }

        let mac_f = field!("mac");
        let mac = match mac_f.text.trim().parse::<MacAddr>() {
            Ok(m) => Some(m),
            Err(e) => {
                bad(mac_f, "mac", e.to_string());
                None
            }
        };

        let ip_field = |f: &Field, name: &str, bad: &mut dyn FnMut(&Field, &str, String)| match f
            .text
            .trim()
            .parse::<Ipv4Addr>()
        {
            Ok(ip) => Some(ip),
            Err(_) => {
                bad(
                    f,
                    name,
                    format!("{:?} is not an IPv4 address", f.text.trim()),
                );
                None
            }
        };
        let ip_f = field!("ip_address");
        let ip = ip_field(ip_f, "ip_address", &mut bad);
        let mask_f = field!("netmask");
        let netmask = ip_field(mask_f, "netmask", &mut bad).and_then(|m| {
            if is_contiguous_netmask(m) {
                Some(m)
            } else {
                bad(
                    mask_f,
                    "netmask",
                    format!("{m} is not a contiguous netmask (like 255.255.255.0)"),
                );
                None
            }
        });
        let gw_f = field!("gateway");
        let gateway = if gw_f.text.trim().is_empty() {
            None
        } else {
            ip_field(gw_f, "gateway", &mut bad)
        };
        if let (Some(ip), Some(mask), Some(gw)) = (ip, netmask, gateway)
            && !same_subnet(ip, gw, mask)
        {
            bad(
                gw_f,
                "gateway",
                format!(
                    "{gw} is not in the machine's subnet {ip}/{}",
                    u32::from(mask).count_ones()
                ),
            );
        }

        let ns_f = field!("nameservers");
        let mut nameservers = Vec::new();
        for part in ns_f
            .text
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match part.parse::<Ipv4Addr>() {
                Ok(a) => nameservers.push(a),
                Err(_) => bad(
                    ns_f,
                    "nameservers",
                    format!("{part:?} is not an IPv4 address (separate nameservers with '|')"),
                ),
            }
        }

        let labels_f = field!("labels");
        let mut label_map = BTreeMap::new();
        for part in labels_f
            .text
            .split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let Some((k, v)) = part.split_once('=') else {
                bad(
                    labels_f,
                    "labels",
                    format!("{part:?} is not key=value (separate labels with '|')"),
                );
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            if let Err(why) = labels::check_key(k).and_then(|_| labels::check_value(v)) {
                bad(labels_f, "labels", why);
            } else if label_map.insert(k.to_string(), v.to_string()).is_some() {
                bad(labels_f, "labels", format!("label {k:?} is given twice"));
            }
        }

        let disk_f = field!("disk");
        let disk = disk_f.text.trim().to_string();
        if !disk.starts_with("/dev/") || disk.len() <= 5 || disk.contains(char::is_whitespace) {
            bad(
                disk_f,
                "disk",
                format!("{disk:?} is not a device path like /dev/sda"),
            );
        }

        let vlan_id = match get("vlan_id") {
            Some(f) if !f.text.trim().is_empty() => match f.text.trim().parse::<u16>() {
                Ok(v) if (1..=4094).contains(&v) => Some(v),
                _ => {
                    bad(
                        f,
                        "vlan_id",
                        format!("{:?} is not a VLAN id (1 to 4094)", f.text.trim()),
                    );
                    None
                }
            },
            _ => None,
        };

        let (bmc_ip_f, user_f, pass_f) = (
            field!("bmc_ip"),
            field!("bmc_username"),
            field!("bmc_password"),
        );
        let bmc_address = bmc_ip_f.text.trim();
        let bmc = if bmc_address.is_empty() {
            None
        } else {
            if let Err(why) = check_bmc_address(bmc_address) {
                bad(bmc_ip_f, "bmc_ip", why);
            }
            if user_f.text.trim().is_empty() {
                bad(user_f, "bmc_username", "required when bmc_ip is set".into());
            }
            if pass_f.text.is_empty() {
                // Never echo the value: only say that it is missing.
                bad(pass_f, "bmc_password", "required when bmc_ip is set".into());
            }
            Some(BmcEndpoint {
                address: bmc_address.to_string(),
                username: user_f.text.trim().to_string(),
                password: Secret::new(pass_f.text.clone()),
            })
        };

        // Uniqueness across rows.
        let mut unique = |key: &'static str, value: String, f: &Field| {
            if let Some(first) = seen.get(&(key, value.clone())) {
                row_errors.push(err(
                    f.line,
                    f.column,
                    key,
                    format!("{value} is already used on line {first}"),
                ));
            } else {
                seen.insert((key, value), line);
            }
        };
        unique("hostname", hostname.clone(), host_f);
        if let Some(m) = mac {
            unique("mac", m.to_string(), mac_f);
        }
        if let Some(ip) = ip {
            unique("ip_address", ip.to_string(), ip_f);
        }
        if bmc.is_some() {
            unique("bmc_ip", bmc_address.to_string(), bmc_ip_f);
        }

        if row_errors.is_empty() {
            machines.push(Row {
                line,
                hardware: Hardware {
                    hostname,
                    mac: mac.expect("checked"),
                    ip: ip.expect("checked"),
                    netmask: netmask.expect("checked"),
                    gateway,
                    nameservers,
                    labels: label_map,
                    disk,
                    vlan_id,
                    bmc,
                    netboot: false,
                },
            });
        } else {
            errors.extend(row_errors);
        }
    }
    if rows.is_empty() {
        errors.push(err(
            header[0].line,
            1,
            "",
            "no machines: the file has a header but no rows".into(),
        ));
    }
    if errors.is_empty() {
        Ok(machines)
    } else {
        Err(CsvErrors(errors))
    }
}

/// A BMC address: `host`, `host:port`, or `scheme://host[:port]` with a
/// scheme Kiln knows.
fn check_bmc_address(address: &str) -> Result<(), String> {
    const SCHEMES: [&str; 5] = ["ipmi", "redfish", "redfish+http", "redfish+https", "https"];
    let rest = match address.split_once("://") {
        Some((scheme, rest)) => {
            if !SCHEMES.contains(&scheme) {
                return Err(format!(
                    "unknown scheme {scheme:?} (use one of {})",
                    SCHEMES.join(", ")
                ));
            }
            rest
        }
        None => address,
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (h, Some(p)),
        _ => (rest, None),
    };
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(format!(
            "{address:?} is not a BMC address (host, host:port or scheme://host:port)"
        ));
    }
    if let Some(p) = port
        && p.parse::<u16>().map(|p| p == 0).unwrap_or(true)
    {
        return Err(format!("{p:?} is not a port number"));
    }
    Ok(())
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
        assert!(
            errs.iter()
                .any(|e| e.message.contains("unknown column \"colour\"") && e.column == 14)
        );
        assert!(errs.iter().any(|e| e.message.contains("\"disk\"")));
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

    #[test]
    fn bmc_addresses() {
        for ok in [
            "10.0.0.5",
            "10.0.0.5:623",
            "ipmi://10.0.0.5:623",
            "redfish+https://bmc.example",
            "redfish+http://127.0.0.1:8000",
        ] {
            assert!(check_bmc_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "gopher://x",
            "ipmi://",
            "10.0.0.5:0",
            "10.0.0.5:99999",
            "a b",
        ] {
            assert!(check_bmc_address(bad).is_err(), "{bad}");
        }
    }
}
