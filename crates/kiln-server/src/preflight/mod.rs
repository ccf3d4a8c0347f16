//! Preflight (`POST /api/v1/preflight`, `kiln preflight`): before anything is powered, every
//! machine's BMC (read only), its address on the segment, the OS image, and the server's own
//! readiness (artifacts, TFTP root, interface, other DHCP servers). Checks run in parallel,
//! each bounded, so one dead BMC costs its own timeout and no more.

pub mod bmc;
pub mod dhcp;
pub mod image;
pub mod local;

use std::net::Ipv4Addr;
use std::sync::Arc;

use kiln_api::{CheckName, CheckStatus, PreflightCheck, PreflightReport, PreflightRequest};
use kiln_model::Hardware;
use kiln_model::csv::parse_hardware_csv_rows;
use kiln_store::{ImageRecord, StoreHandle};
use tokio::sync::Semaphore;

use crate::admin::Failure;
use crate::clusters::ClusterError;
use crate::options::{ServeOptions, images_dir};

/// BMCs read at once.
const PARALLEL: usize = 32;

/// A machine to check and where it was named (`hardware.csv:3`).
struct Target {
    hw: Hardware,
    source: Option<String>,
    hint: Option<String>,
}

/// An image to check and where it was named.
struct NamedImage {
    name: String,
    source: Option<String>,
}

/// What the store and the request give before any check runs.
struct Plan {
    targets: Vec<Target>,
    images: Vec<NamedImage>,
    imported: Vec<ImageRecord>,
    /// A selection that could not be made (a cluster that cannot be placed).
    unplaced: Option<PreflightCheck>,
}

fn row(
    machine: Option<&str>,
    source: Option<&str>,
    check: CheckName,
    status: CheckStatus,
    detail: String,
) -> PreflightCheck {
    PreflightCheck {
        machine: machine.map(str::to_string),
        source: source.map(str::to_string),
        check,
        status,
        detail,
    }
}

/// Whether the machine's address is on Kiln's segment (by the row's netmask).
pub fn machine_address(hw: &Hardware, kiln: Ipv4Addr) -> (CheckStatus, String) {
    let mask = u32::from(hw.netmask);
    let prefix = mask.count_ones();
    if u32::from(hw.ip) & mask == u32::from(kiln) & mask {
        (
            CheckStatus::Ok,
            format!("{}/{prefix} on Kiln's segment ({kiln})", hw.ip),
        )
    } else {
        (
            CheckStatus::Warn,
            format!(
                "{}/{prefix} is not on the segment of Kiln's {kiln}: its DHCP must come through a relay (giaddr)",
                hw.ip
            ),
        )
    }
}

fn plan(store: &dyn kiln_store::Store, req: &PreflightRequest) -> Result<Plan, Failure> {
    let mut targets = Vec::new();
    let mut images = Vec::new();
    let mut unplaced = None;
    if let Some(csv) = &req.csv {
        let parsed = parse_hardware_csv_rows(&csv.file_name, &csv.text).map_err(|errors| {
            Failure::invalid(format!(
                "{} problem(s) in {}; nothing was checked",
                errors.0.len(),
                csv.file_name
            ))
            .with_details(errors.0.into_iter().map(crate::admin::csv_error).collect())
        })?;
        targets.extend(parsed.rows.into_iter().map(|r| Target {
            hw: r.hardware,
            source: Some(format!("{}:{}", csv.file_name, r.line)),
            hint: None,
        }));
    }
    if !req.machines.is_empty() || !req.selector.is_empty() {
        let picked = crate::select::select(store.hardware()?, &req.machines, &req.selector)?;
        targets.extend(picked.into_iter().map(|hw| Target {
            hw,
            source: None,
            hint: None,
        }));
    }
    if let Some(spec) = &req.cluster {
        match crate::clusters::preflight_targets(store, &spec.file_name, &spec.text) {
            Ok(nodes) => {
                for (hw, image) in nodes {
                    if let Some(image) =
                        image.filter(|i| !images.iter().any(|n: &NamedImage| &n.name == i))
                    {
                        images.push(NamedImage {
                            name: image,
                            source: Some(spec.file_name.clone()),
                        });
                    }
                    targets.push(Target {
                        hw,
                        source: Some(spec.file_name.clone()),
                        hint: None,
                    });
                }
            }
            Err(ClusterError::Unplaceable(why)) => {
                unplaced = Some(row(
                    None,
                    Some(&spec.file_name),
                    CheckName::Selection,
                    CheckStatus::Fail,
                    why,
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(t) = &req.template {
        for (name, line) in image::template_images(&t.text) {
            images.push(NamedImage {
                name,
                source: Some(format!("{}:{line}", t.file_name)),
            });
        }
    }
    if let Some(name) = &req.image {
        images.push(NamedImage {
            name: name.clone(),
            source: None,
        });
    }
    for t in &mut targets {
        if let Some(b) = &t.hw.bmc {
            t.hint = store.bmc_hint(&t.hw.hostname, &b.address)?;
        }
    }
    Ok(Plan {
        targets,
        images,
        imported: store.images()?,
        unplaced,
    })
}

/// Runs every check the request asks for, and the server's own.
pub async fn run(
    store: StoreHandle,
    opts: Arc<ServeOptions>,
    req: PreflightRequest,
) -> Result<PreflightReport, Failure> {
    let probe_dhcp = !req.no_dhcp_probe;
    let plan = store.run(move |s| plan(s, &req)).await?;
    let limit = Arc::new(Semaphore::new(PARALLEL));
    let bmc_tasks: Vec<_> = plan
        .targets
        .iter()
        .map(|t| {
            let (hw, hint, limit) = (t.hw.clone(), t.hint.clone(), Arc::clone(&limit));
            tokio::spawn(async move {
                let _slot = limit.acquire_owned().await;
                bmc::check(&hw, hint).await
            })
        })
        .collect();
    let dhcp = {
        let opts = Arc::clone(&opts);
        tokio::spawn(async move {
            if probe_dhcp {
                dhcp::probe(&opts).await
            } else {
                Vec::new()
            }
        })
    };
    let (images, local) = {
        let opts = Arc::clone(&opts);
        let (named, imported) = (plan.images, plan.imported);
        tokio::task::spawn_blocking(move || {
            let dir = images_dir(&opts.data_dir);
            let images: Vec<PreflightCheck> = named
                .iter()
                .map(|n| {
                    let (status, detail) = image::check(&n.name, &imported, &dir);
                    row(None, n.source.as_deref(), CheckName::Image, status, detail)
                })
                .collect();
            let local = [
                local::artifacts(&opts),
                local::tftp_root(&opts),
                local::interface(&opts),
            ];
            (images, local)
        })
        .await
        .map_err(|e| Failure::internal(format!("preflight: {e}")))?
    };
    let mut checks: Vec<PreflightCheck> = plan.unplaced.into_iter().collect();
    for (t, task) in plan.targets.iter().zip(bmc_tasks) {
        let (name, source) = (Some(t.hw.hostname.as_str()), t.source.as_deref());
        let (status, detail) = machine_address(&t.hw, opts.address);
        checks.push(row(name, source, CheckName::MachineAddress, status, detail));
        let bmc_rows = task
            .await
            .map_err(|e| Failure::internal(format!("preflight: {e}")))?;
        for (check, status, detail) in bmc_rows {
            checks.push(row(name, source, check, status, detail));
        }
    }
    checks.extend(images);
    let dhcp = dhcp
        .await
        .map_err(|e| Failure::internal(format!("preflight: {e}")))?;
    for f in local.into_iter().chain(dhcp) {
        checks.push(row(None, None, f.check, f.status, f.detail));
    }
    Ok(PreflightReport::new(checks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw(ip: &str, netmask: &str) -> Hardware {
        let csv = format!(
            "hostname,mac,ip_address,netmask,gateway,nameservers,labels,disk\nm1,52:54:00:00:00:01,{ip},{netmask},,,,/dev/sda\n"
        );
        kiln_model::csv::parse_hardware_csv("t.csv", &csv)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn machines_off_the_segment_are_named() {
        let kiln = Ipv4Addr::new(10, 77, 0, 1);
        let (s, d) = machine_address(&hw("10.77.0.61", "255.255.255.0"), kiln);
        assert_eq!(s, CheckStatus::Ok);
        assert_eq!(d, "10.77.0.61/24 on Kiln's segment (10.77.0.1)");
        let (s, d) = machine_address(&hw("10.78.0.61", "255.255.255.0"), kiln);
        assert_eq!(s, CheckStatus::Warn);
        assert!(d.contains("through a relay"), "{d}");
    }
}
