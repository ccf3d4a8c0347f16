//! iPXE scripts: the machine's agent boot, or a way back to its own disk.

use kiln_model::event::{EventData, IpxeScript};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_model::{Event, Hardware, MacAddr};

use crate::AppState;

const NETBOOT: &str = include_str!("../../../ipxe/netboot.ipxe");
const LOCAL_DISK: &str = include_str!("../../../ipxe/local-disk.ipxe");

/// What a netboot script needs; everything is already validated.
pub struct ScriptParams<'a> {
    pub server: &'a str,
    pub kernel: &'a str,
    pub initrd: &'a str,
    pub kernel_args: &'a str,
    pub hardware: &'a Hardware,
}

/// Fills `{{name}}` placeholders. Values come from validated records
/// (hostnames, MACs) and the operator's configuration, never from the request.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

pub fn netboot_script(p: &ScriptParams<'_>) -> String {
    let mac = p.hardware.mac.to_string();
    fill(
        NETBOOT,
        &[
            ("server", p.server),
            ("kernel", p.kernel),
            ("initrd", p.initrd),
            ("kernel_args", p.kernel_args),
            ("hostname", &p.hardware.hostname),
            ("mac", &mac),
        ],
    )
}

pub fn local_disk_script(who: &str, reason: &str) -> String {
    fill(LOCAL_DISK, &[("who", who), ("reason", reason)])
}

pub(crate) async fn boot_script(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
) -> Response {
    let Ok(mac) = mac.parse::<MacAddr>() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{mac:?} is not a MAC address\n"),
        )
            .into_response();
    };
    let inv = state.inventory.load();
    let cfg = &state.config;
    let kernel_args = match &cfg.agent_apis {
        Some(apis) => format!("{} {}", cfg.kernel_args.trim(), apis.kernel_args()),
        None => cfg.kernel_args.trim().to_string(),
    };
    let netboots = match inv.by_mac(&mac) {
        Some(hw) if hw.netboot => {
            let (p, host) = (state.provisioning.clone(), hw.hostname.clone());
            tokio::task::spawn_blocking(move || p.still_netboots(&host))
                .await
                .unwrap_or(true)
        }
        _ => false,
    };
    let (script, event) = match inv.by_mac(&mac) {
        Some(hw) if netboots => {
            // No credential in the script: anyone can name a MAC. The agent claims its own.
            let script = netboot_script(&ScriptParams {
                server: &cfg.server_url,
                kernel: &cfg.kernel,
                initrd: &cfg.initrd,
                kernel_args: kernel_args.trim(),
                hardware: hw,
            });
            (
                script,
                Some(EventData::HttpScript {
                    script: IpxeScript::Netboot,
                    kernel: Some(cfg.kernel.clone()),
                    initrd: Some(cfg.initrd.clone()),
                }),
            )
        }
        Some(hw) => (
            local_disk_script(&hw.hostname, "netboot is off"),
            Some(EventData::HttpScript {
                script: IpxeScript::LocalDisk,
                kernel: None,
                initrd: None,
            }),
        ),
        // Not enrolled, inspection on: the agent in inspection-only mode. The script holds no
        // secret either; the agent takes a ticket good for one inventory report.
        None if cfg.inspect => {
            let guest = Hardware::inspection_guest(
                mac,
                std::net::Ipv4Addr::UNSPECIFIED,
                std::net::Ipv4Addr::UNSPECIFIED,
            );
            let kernel_args = format!("{} kiln.inspect=1", kernel_args.trim());
            let script = netboot_script(&ScriptParams {
                server: &cfg.server_url,
                kernel: &cfg.kernel,
                initrd: &cfg.initrd,
                kernel_args: &kernel_args,
                hardware: &guest,
            });
            (script, None)
        }
        // Not enrolled: anyone can name a MAC, so no event (it could flood the log).
        None => (
            local_disk_script(&mac.to_string(), "this machine is not enrolled"),
            None,
        ),
    };
    if let Some(data) = event {
        state
            .events
            .emit(Event::of(data).with_mac(mac).with_ip(peer.ip()));
    }
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        script,
    )
        .into_response()
}
