//! Simulated IPMI BMCs: one UDP port per machine, answering RMCP+ (cipher suites 17 and 3) with
//! the responder `kiln-ipmi` validates against ipmitool. Its Chassis Control commands drive
//! the machine's power line as ipmi_sim's chassis does: power up, down, cycle, hard reset, soft
//! shutdown; Get Chassis Status reads it (the machine may have powered itself off).

use std::net::SocketAddr;
use std::sync::Arc;

use kiln_ipmi::CipherSuite;
use kiln_ipmi::responder::Responder;
use tokio::net::UdpSocket;

use crate::redfish::Chassis;

/// The largest RMCP+ datagram a console sends Kiln's commands in.
const MAX_DATAGRAM: usize = 1024;

/// The Redfish ResetType a Chassis Control code amounts to (IPMI v2.0 §28.3).
fn reset_type(code: u8) -> Option<&'static str> {
    match code {
        0 => Some("ForceOff"),
        1 => Some("On"),
        2 => Some("PowerCycle"),
        3 => Some("ForceRestart"),
        5 => Some("GracefulShutdown"),
        _ => None,
    }
}

/// One machine's BMC.
pub struct SimIpmi {
    responder: Responder,
    chassis: Arc<Chassis>,
}

impl SimIpmi {
    pub fn new(chassis: Arc<Chassis>, user: &str, password: &str) -> SimIpmi {
        let mut responder = Responder::new(&[CipherSuite::Suite17, CipherSuite::Suite3]);
        responder.add_user(user, password);
        SimIpmi { responder, chassis }
    }

    /// The reply to one datagram, the machine's power changed by what it asked.
    pub fn handle(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        self.responder.chassis.power_on = self.chassis.power().on;
        let reply = self.responder.handle(datagram);
        for code in self.responder.chassis.controls.drain(..) {
            if let Some(t) = reset_type(code) {
                // Every code above is a known ResetType.
                let _ = self.chassis.reset(t);
            }
        }
        reply
    }

    /// Answers on `socket` until it fails.
    pub async fn serve(mut self, socket: UdpSocket) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                return;
            };
            if let Some(reply) = self.handle(&buf[..n]) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    }

    /// Binds `addr` and answers there in the background.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<()> {
        let socket = UdpSocket::bind(addr).await?;
        tokio::spawn(self.serve(socket));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_bmc::{Bmc, BmcAddress, IpmiBmc, PowerAction, PowerState};
    use kiln_model::Secret;

    /// A simulated BMC on loopback, and Kiln's own IPMI driver (as `kiln serve` uses it) for it.
    async fn bmc_and_driver(password: &str) -> (Arc<Chassis>, IpmiBmc) {
        let chassis = Arc::new(Chassis::default());
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(SimIpmi::new(chassis.clone(), "admin", "s3cret").serve(socket));
        let address = BmcAddress::parse(&format!("ipmi://{addr}")).unwrap();
        let driver = IpmiBmc::new(&address, "admin", &Secret::new(password)).unwrap();
        (chassis, driver)
    }

    #[tokio::test]
    async fn kilns_ipmi_driver_powers_the_machine_through_it() {
        let (chassis, bmc) = bmc_and_driver("s3cret").await;
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
        bmc.power(PowerAction::On).await.unwrap();
        assert_eq!(chassis.power().boots, 1, "one power-on, one boot");
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
        chassis.off(); // the agent's poweroff action
        assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
        bmc.power(PowerAction::On).await.unwrap();
        let now = chassis.power();
        assert!(now.on && now.boots == 2, "{now:?}");
    }

    #[tokio::test]
    async fn a_wrong_password_changes_nothing() {
        let (chassis, bmc) = bmc_and_driver("wrong").await;
        let err = bmc.power(PowerAction::On).await.unwrap_err();
        assert_eq!(err.kind(), kiln_bmc::ErrorKind::Auth, "{err}");
        assert_eq!(chassis.power().boots, 0);
    }
}
