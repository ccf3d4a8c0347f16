//! What an enrolment does, the same on every backend: which enrolled machine each row
//! replaces (same hostname or MAC), which rows clash with machines they leave alone, and what
//! the summary says. Backends answer "who owns this value" and write the rows.

use std::collections::{HashMap, HashSet};

use kiln_model::Hardware;

use crate::{Conflict, EnrollSummary, StoreError};

/// Each row's index in the file, with the enrolled machine it replaces (if any).
pub(crate) type Plan = Vec<(usize, Option<String>)>;

/// `owner(column, value)`: the hostname of the enrolled machine whose `column` (`hostname`,
/// `mac`, `ip`, `bmc_address`) is `value`.
pub(crate) type Owner<'a> = dyn FnMut(&str, &str) -> Result<Option<String>, StoreError> + 'a;

/// The plan and the hostnames it replaces; [`StoreError::Conflicts`] with every clash (a
/// hostname and MAC enrolled to two different machines, an IP or BMC address of a machine the
/// file leaves alone).
pub(crate) fn plan(
    machines: &[Hardware],
    owner: &mut Owner<'_>,
) -> Result<(Plan, HashSet<String>), StoreError> {
    let mut conflicts = Vec::new();
    let mut replaced: HashSet<String> = HashSet::new();
    let mut plan = Vec::with_capacity(machines.len());
    for (index, hw) in machines.iter().enumerate() {
        let by_name = owner("hostname", &hw.hostname)?;
        let by_mac = owner("mac", &hw.mac.to_string())?;
        if let (Some(a), Some(b)) = (&by_name, &by_mac)
            && a != b
        {
            conflicts.push(Conflict {
                index,
                field: "mac",
                message: format!("{} is enrolled to {b}, not to {a}", hw.mac),
            });
            continue;
        }
        let existing = by_name.or(by_mac);
        if let Some(name) = &existing {
            replaced.insert(name.clone());
        }
        plan.push((index, existing));
    }
    address_conflicts(machines, &replaced, owner, &mut conflicts)?;
    if conflicts.is_empty() {
        Ok((plan, replaced))
    } else {
        Err(StoreError::Conflicts(conflicts))
    }
}

/// IP and BMC address must not belong to a machine this file leaves alone.
fn address_conflicts(
    machines: &[Hardware],
    replaced: &HashSet<String>,
    owner: &mut Owner<'_>,
    conflicts: &mut Vec<Conflict>,
) -> Result<(), StoreError> {
    for (index, hw) in machines.iter().enumerate() {
        if let Some(o) = owner("ip", &hw.ip.to_string())?.filter(|o| !replaced.contains(o)) {
            conflicts.push(Conflict {
                index,
                field: "ip_address",
                message: format!("{} is already the address of enrolled machine {o}", hw.ip),
            });
        }
        let Some(bmc) = &hw.bmc else { continue };
        if let Some(o) = owner("bmc_address", &bmc.address)?.filter(|o| !replaced.contains(o)) {
            conflicts.push(Conflict {
                index,
                field: "bmc_ip",
                message: format!("{} is already the BMC of enrolled machine {o}", bmc.address),
            });
        }
    }
    Ok(())
}

/// Lets `change` edit an enrolled machine (labels, BMC credentials), refusing with its message,
/// and refuses an edit of what only a hardware.csv row changes: hostname, MAC, IP, BMC address.
pub(crate) fn update(
    hw: &mut Hardware,
    change: &mut dyn FnMut(&mut Hardware) -> Result<(), String>,
) -> Result<(), StoreError> {
    let identity = |hw: &Hardware| {
        let bmc = hw.bmc.as_ref().map(|b| b.address.clone());
        (hw.hostname.clone(), hw.mac, hw.ip, bmc)
    };
    let before = identity(hw);
    change(hw).map_err(StoreError::Invalid)?;
    if identity(hw) != before {
        return Err(StoreError::Invalid(
            "hostname, MAC, IP and BMC address change only by enrolling a hardware.csv".into(),
        ));
    }
    Ok(())
}

/// The rows to write (each keeping the netboot flag of the machine it replaces) and what
/// changed; `previous` holds the replaced machines by hostname.
pub(crate) fn rows(
    machines: &[Hardware],
    plan: Plan,
    previous: &HashMap<String, Hardware>,
) -> (Vec<Hardware>, EnrollSummary) {
    let mut summary = EnrollSummary::default();
    let mut rows = Vec::with_capacity(plan.len());
    for (index, existing) in plan {
        let mut hw = machines[index].clone();
        let old = existing.as_ref().and_then(|n| previous.get(n));
        hw.netboot = old.map(|o| o.netboot).unwrap_or(false);
        let list = match old {
            None => &mut summary.added,
            Some(o)
                if o == &hw
                    && o.bmc.as_ref().map(|b| &b.password)
                        == hw.bmc.as_ref().map(|b| &b.password) =>
            {
                &mut summary.unchanged
            }
            Some(_) => &mut summary.updated,
        };
        list.push(hw.hostname.clone());
        rows.push(hw);
    }
    (rows, summary)
}
