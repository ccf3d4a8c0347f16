//! `/api/v1/discovered`: MACs that asked for DHCP but are not enrolled, and their enrolment
//! with addresses from a pool (`kiln enroll --from-discovered`): the request becomes a
//! hardware.csv (file `discovered`) that goes through the very path `kiln enroll` takes, all
//! rows or none; the MACs enrolled leave the list.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use kiln_api::discovery::RuleCondition;
use kiln_api::{Detail, DiscoveredEnroll, DiscoveredMac, EnrollOutcome, EnrollRequest};
use kiln_model::{Hardware, MacAddr};
use kiln_store::Store;

use super::{AdminState, ApiResult, Failure};
use crate::recorder::Sighting;

/// The file name enrolment diagnostics give the generated hardware.csv.
const FILE: &str = "discovered";

/// Discovered MACs not enrolled (since), most recently seen first.
fn unenrolled(store: &dyn Store) -> Result<Vec<DiscoveredMac>, kiln_store::StoreError> {
    let enrolled: BTreeSet<MacAddr> = store.hardware()?.iter().map(|h| h.mac).collect();
    let mut all = store.discovered()?;
    all.retain(|d| !enrolled.contains(&d.mac));
    Ok(all)
}

/// What the flight recorder reads: the unknown MACs and what they asked for.
pub(super) fn sightings(store: &dyn Store) -> Result<Vec<Sighting>, kiln_store::StoreError> {
    Ok(unenrolled(store)?
        .iter()
        .map(|d| Sighting {
            mac: d.mac.to_string(),
            first_seen_ms: d.first_seen_ms,
            last_seen_ms: d.last_seen_ms,
            asked: d.asked(),
        })
        .collect())
}

/// MACs that netbooted (asked for DHCP) but are not enrolled, with what they asked for.
#[utoipa::path(get, path = "/api/v1/discovered", operation_id = "discovered_list", tag = "discovery",
    responses((status = 200, body = Vec<DiscoveredMac>)))]
pub async fn list(State(s): State<Arc<AdminState>>) -> ApiResult<Json<Vec<DiscoveredMac>>> {
    Ok(Json(s.store.run(|store| unenrolled(store)).await?))
}

/// Enrols discovered MACs (all, or those named) with addresses from a pool and labels by
/// rules, all or none, as a hardware.csv would be; the enrolled ones leave the list.
#[utoipa::path(post, path = "/api/v1/discovered/enroll", operation_id = "discovered_enroll", tag = "discovery",
    request_body = DiscoveredEnroll,
    responses((status = 200, body = EnrollOutcome),
        (status = 422, description = "Bad pool, rules or rows; nothing enrolled", body = kiln_api::ApiErrorBody)))]
pub async fn enroll(
    State(s): State<Arc<AdminState>>,
    Json(req): Json<DiscoveredEnroll>,
) -> ApiResult<Json<EnrollOutcome>> {
    s.store
        .run(move |store| {
            let found = unenrolled(store)?;
            let (csv, macs) = plan(&found, &store.hardware()?, &req).map_err(|details| {
                Failure::invalid(format!(
                    "{} problem(s) in the request; nothing was enrolled",
                    details.len()
                ))
                .with_details(details)
            })?;
            let csv_req = EnrollRequest {
                file_name: FILE.into(),
                csv,
                replace: false,
            };
            let outcome = super::hardware::enroll_blocking(store, csv_req, req.dry_run)?;
            if outcome.enrolled {
                // What inspection found becomes the machine's first inventory report, so
                // inventory selectors and `kiln hardware inventory` work before it netboots.
                let prefix = req.hostname_prefix.as_deref().unwrap_or("node");
                for d in found.iter().filter(|d| macs.contains(&d.mac)) {
                    if let Some(i) = &d.inspection {
                        let json =
                            serde_json::to_string(&i.inventory).expect("inventories serialize");
                        store.put_inventory(
                            &hostname(prefix, d.mac),
                            i.at_ms,
                            &json,
                            crate::machine_inventory::INVENTORY_KEEP,
                        )?;
                    }
                }
                store.forget_discovered(&macs)?;
            }
            Ok(Json(outcome))
        })
        .await
}

fn problem(field: &str, message: String) -> Detail {
    Detail {
        file: None,
        line: None,
        column: None,
        field: Some(field.into()),
        message,
    }
}

/// `FIRST-LAST/PREFIX` → (first, last, netmask).
fn parse_pool(pool: &str) -> Result<(u32, u32, Ipv4Addr), String> {
    let usage = || format!("{pool:?} is not FIRST-LAST/PREFIX (10.0.0.100-10.0.0.150/24)");
    let (range, prefix) = pool.split_once('/').ok_or_else(usage)?;
    let (first, last) = range.split_once('-').ok_or_else(usage)?;
    let ip = |s: &str| s.trim().parse::<Ipv4Addr>().map_err(|_| usage());
    let (first, last) = (u32::from(ip(first)?), u32::from(ip(last)?));
    let prefix: u32 = prefix.trim().parse().map_err(|_| usage())?;
    if !(1..=32).contains(&prefix) || first > last {
        return Err(usage());
    }
    let mask = u32::MAX << (32 - prefix);
    if first & mask != last & mask {
        return Err(format!("{pool:?}: first and last are not in one /{prefix}"));
    }
    Ok((first, last, Ipv4Addr::from(mask)))
}

/// The hostname enrolment gives a discovered MAC: `PREFIX-` and its 12 hex digits.
fn hostname(prefix: &str, mac: MacAddr) -> String {
    format!("{prefix}-{}", mac.to_string().replace(':', ""))
}

/// `CONDITION:K=V` → (condition, label); conditions as [`RuleCondition::parse`] reads them.
fn parse_rule(rule: &str) -> Result<(RuleCondition, &str), String> {
    let (cond, label) = rule.split_once(':').ok_or_else(|| {
        format!("{rule:?} is not CONDITION:KEY=VALUE (arch=x86_64:role=worker, inventory.memory_gib>=64:size=large)")
    })?;
    if !label.contains('=') {
        return Err(format!("{rule:?}: the label {label:?} is not KEY=VALUE"));
    }
    Ok((RuleCondition::parse(cond)?, label))
}

/// Values that go into the CSV as given must not break its structure.
fn unsafe_texts(req: &DiscoveredEnroll) -> Vec<Detail> {
    let fields: [(&str, Vec<&String>); 6] = [
        ("gateway", req.gateway.iter().collect()),
        ("labels", req.labels.iter().collect()),
        ("nameservers", req.nameservers.iter().collect()),
        ("rules", req.rules.iter().collect()),
        ("hostname_prefix", req.hostname_prefix.iter().collect()),
        ("disk", req.disk.iter().collect()),
    ];
    let mut problems = Vec::new();
    for (field, values) in fields {
        for v in values {
            if v.contains([',', '"', '|', '\n', '\r']) {
                problems.push(problem(field, format!("{v:?}: no , \" | or line breaks")));
            }
        }
    }
    problems
}

/// The MACs the request names (all discovered ones when it names none).
fn chosen<'a>(
    found: &'a [DiscoveredMac],
    req: &DiscoveredEnroll,
    problems: &mut Vec<Detail>,
) -> Vec<&'a DiscoveredMac> {
    if req.macs.is_empty() {
        return found.iter().collect();
    }
    let mut out = Vec::new();
    for m in &req.macs {
        match found.iter().find(|d| d.mac.to_string() == m.to_lowercase()) {
            Some(d) => out.push(d),
            None => problems.push(problem(
                "macs",
                format!("{m} is not among the discovered MACs"),
            )),
        }
    }
    out
}

/// The hardware.csv for the request, and the MACs it enrols; or what is wrong with it.
fn plan(
    found: &[DiscoveredMac],
    enrolled: &[Hardware],
    req: &DiscoveredEnroll,
) -> Result<(String, Vec<MacAddr>), Vec<Detail>> {
    let mut problems = unsafe_texts(req);
    let pool = parse_pool(&req.pool).map_err(|m| problem("pool", m));
    let mut rules = Vec::new();
    for (i, r) in req.rules.iter().enumerate() {
        match parse_rule(r) {
            Ok(rule) => rules.push(rule),
            Err(m) => problems.push(problem(&format!("rules[{i}]"), m)),
        }
    }
    let chosen = chosen(found, req, &mut problems);
    if chosen.is_empty() && problems.is_empty() {
        problems.push(problem("macs", "no discovered MAC to enrol".into()));
    }
    let (first, last, netmask) = match pool {
        Ok(p) => p,
        Err(d) => {
            problems.push(d);
            return Err(problems);
        }
    };
    let used: BTreeSet<u32> = enrolled.iter().map(|h| u32::from(h.ip)).collect();
    let mut free = (first..=last).filter(|ip| !used.contains(ip));
    let prefix = req.hostname_prefix.as_deref().unwrap_or("node");
    let mut csv = String::from(
        "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n",
    );
    for d in &chosen {
        let Some(ip) = free.next() else {
            problems.push(problem(
                "pool",
                format!(
                    "{} has too few free addresses for {} machine(s)",
                    req.pool,
                    chosen.len()
                ),
            ));
            break;
        };
        let mut labels = req.labels.clone();
        for (condition, label) in &rules {
            if d.satisfies(condition) {
                labels.push((*label).to_string());
            }
        }
        csv.push_str(&format!(
            "{},,,,{},{},{netmask},{},{},{},{}\n",
            hostname(prefix, d.mac),
            d.mac,
            Ipv4Addr::from(ip),
            req.gateway.as_deref().unwrap_or(""),
            req.nameservers.join("|"),
            labels.join("|"),
            req.disk.as_deref().unwrap_or("/dev/sda"),
        ));
    }
    if problems.is_empty() {
        Ok((csv, chosen.iter().map(|d| d.mac).collect()))
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::event::DhcpClient;

    fn found(last: u8, arch: u16) -> DiscoveredMac {
        DiscoveredMac {
            mac: format!("52:54:00:aa:bb:{last:02x}").parse().unwrap(),
            first_seen_ms: 1,
            last_seen_ms: 2,
            count: 1,
            client: DhcpClient::Pxe,
            arch: Some(arch),
            vendor_class: None,
            user_class: None,
            inspection: None,
        }
    }

    fn request() -> DiscoveredEnroll {
        DiscoveredEnroll {
            pool: "10.0.0.100-10.0.0.150/24".into(),
            gateway: Some("10.0.0.1".into()),
            labels: vec!["site=lab".into()],
            rules: vec!["arch=arm64:role=worker".into()],
            ..Default::default()
        }
    }

    #[test]
    fn each_mac_gets_a_free_pool_address_and_the_labels_its_facts_earn() {
        let enrolled = kiln_model::csv::parse_hardware_csv(
            "h.csv",
            "hostname,bmc_ip,bmc_username,bmc_password,mac,ip_address,netmask,gateway,nameservers,labels,disk\n\
             old,,,,52:54:00:00:00:01,10.0.0.100,255.255.255.0,,,,/dev/sda\n",
        )
        .unwrap();
        let (csv, macs) = plan(&[found(1, 0), found(2, 11)], &enrolled, &request()).unwrap();
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(
            rows,
            [
                "node-525400aabb01,,,,52:54:00:aa:bb:01,10.0.0.101,255.255.255.0,10.0.0.1,,site=lab,/dev/sda",
                "node-525400aabb02,,,,52:54:00:aa:bb:02,10.0.0.102,255.255.255.0,10.0.0.1,,site=lab|role=worker,/dev/sda",
            ]
        );
        assert_eq!(macs.len(), 2);
        // The generated file passes the real parser.
        let machines = kiln_model::csv::parse_hardware_csv(FILE, &csv).unwrap();
        assert_eq!(machines[1].labels["role"], "worker");
    }

    #[test]
    fn rules_on_inventory_facts_label_only_the_inspected_machines_that_meet_them() {
        let mut big = found(1, 0);
        big.inspection = Some(serde_json::from_str(
            r#"{"at_ms":5,"inventory":{"cpu":{"model":"QEMU","cores":2},"memory_bytes":2147483648,
                "firmware":"bios","dmi":{"vendor":"QEMU","product":"pc","serial":""},
                "disks":[{"name":"vda","size_bytes":8589934592,"model":"","serial":"A","wwn":"",
                  "rotational":false,"removable":false,"signatures":[],"partitions":[]}],
                "nics":[],"unbound_pci":[]}}"#,
        )
        .unwrap());
        let small = found(2, 0);
        let req = DiscoveredEnroll {
            rules: vec![
                "inventory.memory_gib>=2:size=big".into(),
                "disk.size>=8G:storage=yes".into(),
                "vendor=QEMU:virtual=yes".into(),
            ],
            labels: Vec::new(),
            ..request()
        };
        let (csv, _) = plan(&[big, small], &[], &req).unwrap();
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert!(
            rows[0].ends_with(",size=big|storage=yes|virtual=yes,/dev/sda"),
            "{csv}"
        );
        assert!(
            rows[1].ends_with(",,/dev/sda"),
            "not inspected: no inventory label: {csv}"
        );
        let mut bad = request();
        bad.rules = vec!["inventory.memory_gib>=lots:a=b".into()];
        let problems = plan(&[found(1, 0)], &[], &bad).unwrap_err();
        assert!(
            problems[0].message.contains("not a whole number"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_bad_pool_rule_or_mac_names_its_field_and_nothing_is_planned() {
        let mut req = request();
        req.pool = "10.0.0.100/24".into();
        req.rules = vec!["arch=arm64".into(), "colour=red:a=b".into()];
        req.macs = vec!["52:54:00:00:00:99".into()];
        req.labels = vec!["a=b,c".into()];
        let problems = plan(&[found(1, 0)], &[], &req).unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.clone().unwrap()).collect();
        assert_eq!(fields, ["labels", "rules[0]", "rules[1]", "macs", "pool"]);
        let mut small = request();
        small.pool = "10.0.0.100-10.0.0.100/24".into();
        let problems = plan(&[found(1, 0), found(2, 0)], &[], &small).unwrap_err();
        assert!(
            problems[0].message.contains("too few free addresses"),
            "{problems:?}"
        );
        assert!(parse_pool("10.0.0.1-10.0.1.1/24").is_err());
    }
}
