//! Machines picked by name, by label (`k=v`) or by what their inventory says
//! (`inventory.memory_gib>=64`, `inventory.cpu_cores>=8`, `disk.size>=500G`): the
//! `--hardware`/`--selector` of workflows and BMC actions.

use kiln_api::disk_hint::{Cmp, parse_size};
use kiln_api::inventory::Inventory;
use kiln_model::Hardware;
use kiln_store::Store;

/// Why machines could not be picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("name at least one machine, or pass --selector k=v")]
    NothingNamed,
    #[error("no machine named {0:?} is enrolled")]
    NotEnrolled(String),
    #[error("--selector {0:?} is not k=v")]
    NotKeyValue(String),
    /// An inventory selector that does not parse.
    #[error("--selector {selector:?}: {why}")]
    BadSelector { selector: String, why: String },
    #[error("no enrolled machine matches --selector {0}")]
    NoMatch(String),
}

/// What an inventory selector compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    MemoryGib,
    CpuCores,
    /// Any one disk's size, in bytes.
    DiskSize,
}

/// One `--selector` term.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term<'a> {
    Label(&'a str, &'a str),
    Inventory(Measure, Cmp, u64),
}

const MEASURES: &str = "inventory.memory_gib, inventory.cpu_cores, disk.size";

fn term(s: &str) -> Result<Term<'_>, SelectError> {
    let bad = |why: String| SelectError::BadSelector {
        selector: s.to_string(),
        why,
    };
    let inventory = s.starts_with("inventory.") || s.starts_with("disk.");
    if !inventory {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| SelectError::NotKeyValue(s.to_string()))?;
        return Ok(Term::Label(k, v));
    }
    let (key, op, value) = Cmp::split(s)
        .filter(|(_, op, _)| *op != Cmp::Contains)
        .ok_or_else(|| bad("needs one of =, !=, >=, <=, >, < and a number".into()))?;
    let measure = match key {
        "inventory.memory_gib" => Measure::MemoryGib,
        "inventory.cpu_cores" => Measure::CpuCores,
        "disk.size" => Measure::DiskSize,
        _ => return Err(bad(format!("{key:?} is not one of {MEASURES}"))),
    };
    let n = if measure == Measure::DiskSize {
        parse_size(value).ok_or_else(|| {
            bad(format!(
                "{value:?} is not a size (500, 500G, 2T; GiB by default)"
            ))
        })?
    } else {
        value
            .parse()
            .map_err(|_| bad(format!("{value:?} is not a whole number")))?
    };
    Ok(Term::Inventory(measure, op, n))
}

impl Term<'_> {
    fn matches(&self, h: &Hardware, inventory: Option<&Inventory>) -> bool {
        match self {
            Term::Label(k, v) => h.labels.get(*k).map(String::as_str) == Some(*v),
            // A machine that never reported matches no inventory selector.
            Term::Inventory(m, op, n) => inventory.is_some_and(|inv| match m {
                Measure::MemoryGib => op.holds(inv.memory_gib(), *n),
                Measure::CpuCores => op.holds(u64::from(inv.cpu.cores), *n),
                Measure::DiskSize => inv.disks.iter().any(|d| op.holds(d.size_bytes, *n)),
            }),
        }
    }
}

/// The machine's latest inventory report, if it sent one this version can read.
pub fn latest_inventory(store: &dyn Store, hostname: &str) -> Option<Inventory> {
    let records = store.inventories(hostname, 1).ok()?;
    serde_json::from_str(&records.first()?.report).ok()
}

/// [`select_with`] for label selectors only (no inventory known).
pub fn select(
    all: Vec<Hardware>,
    names: &[String],
    selector: &[String],
) -> Result<Vec<Hardware>, SelectError> {
    select_with(all, names, selector, &|_| None)
}

/// The named machines (each must be enrolled), or those that match every term of
/// `selector` (labels, and the latest inventory `inventory_of` gives); at least one.
pub fn select_with(
    all: Vec<Hardware>,
    names: &[String],
    selector: &[String],
    inventory_of: &dyn Fn(&str) -> Option<Inventory>,
) -> Result<Vec<Hardware>, SelectError> {
    if selector.is_empty() {
        if names.is_empty() {
            return Err(SelectError::NothingNamed);
        }
        return names
            .iter()
            .map(|n| {
                all.iter()
                    .find(|m| &m.hostname == n)
                    .cloned()
                    .ok_or_else(|| SelectError::NotEnrolled(n.clone()))
            })
            .collect();
    }
    let terms = selector
        .iter()
        .map(|s| term(s))
        .collect::<Result<Vec<_>, _>>()?;
    let needs_inventory = terms.iter().any(|t| matches!(t, Term::Inventory(..)));
    let picked: Vec<Hardware> = all
        .into_iter()
        .filter(|h| {
            let inv = needs_inventory.then(|| inventory_of(&h.hostname)).flatten();
            terms.iter().all(|t| t.matches(h, inv.as_ref()))
        })
        .collect();
    if picked.is_empty() {
        return Err(SelectError::NoMatch(selector.join(",")));
    }
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_api::inventory::{Cpu, Disk};

    fn machine(name: &str, role: &str) -> Hardware {
        let row = format!(
            "hostname,mac,ip_address,netmask,gateway,nameservers,labels,disk\n{name},aa:bb:cc:dd:ee:0{},10.0.0.{},255.255.255.0,10.0.0.254,,role={role},/dev/sda\n",
            name.len() % 10,
            name.len() + 1
        );
        kiln_model::csv::parse_hardware_csv("hw.csv", &row)
            .unwrap()
            .remove(0)
    }

    fn inventory(gib: u64, cores: u32, disks_gib: &[u64]) -> Inventory {
        Inventory {
            cpu: Cpu {
                model: String::new(),
                cores,
            },
            memory_bytes: gib << 30,
            disks: disks_gib
                .iter()
                .enumerate()
                .map(|(i, g)| Disk {
                    name: format!("sd{i}"),
                    by_path: String::new(),
                    size_bytes: g << 30,
                    model: String::new(),
                    serial: String::new(),
                    wwn: String::new(),
                    rotational: false,
                    removable: false,
                    signatures: vec![],
                    partitions: vec![],
                })
                .collect(),
            ..Default::default()
        }
    }

    fn pick(selector: &[&str]) -> Result<Vec<String>, SelectError> {
        let all = vec![
            machine("big", "worker"),
            machine("small1", "worker"),
            machine("new", "worker"),
        ];
        let of = |h: &str| match h {
            "big" => Some(inventory(128, 32, &[480, 1000])),
            "small1" => Some(inventory(16, 4, &[240])),
            _ => None,
        };
        let sel: Vec<String> = selector.iter().map(|s| s.to_string()).collect();
        select_with(all, &[], &sel, &of).map(|v| v.into_iter().map(|h| h.hostname).collect())
    }

    #[test]
    fn inventory_selectors_compare_the_latest_report() {
        assert_eq!(pick(&["inventory.memory_gib>=64"]).unwrap(), ["big"]);
        assert_eq!(pick(&["inventory.cpu_cores<8"]).unwrap(), ["small1"]);
        assert_eq!(
            pick(&["inventory.cpu_cores!=4", "role=worker"]).unwrap(),
            ["big"]
        );
        assert_eq!(pick(&["disk.size>=500G"]).unwrap(), ["big"], "any one disk");
        assert_eq!(pick(&["disk.size=240"]).unwrap(), ["small1"]);
        assert_eq!(
            pick(&["role=worker"]).unwrap().len(),
            3,
            "labels need no report"
        );
        assert!(matches!(
            pick(&["inventory.memory_gib>1000"]),
            Err(SelectError::NoMatch(_))
        ));
    }

    #[test]
    fn bad_inventory_selectors_are_named() {
        let e = pick(&["inventory.colour>=3"]).unwrap_err().to_string();
        assert!(
            e.contains("\"inventory.colour>=3\"") && e.contains("inventory.memory_gib"),
            "{e}"
        );
        let e = pick(&["disk.size>=lots"]).unwrap_err().to_string();
        assert!(e.contains("not a size"), "{e}");
        let e = pick(&["inventory.cpu_cores~8"]).unwrap_err().to_string();
        assert!(e.contains("needs one of"), "{e}");
        let e = pick(&["inventory.cpu_cores>=eight"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a whole number"), "{e}");
    }
}
