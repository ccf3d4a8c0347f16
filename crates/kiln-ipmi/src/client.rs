//! The thin async shell: one UDP socket, one [`Session`], per-request timeouts.
//!
//! Retransmission: handshake steps and commands marked [`Command::RETRY_SAFE`] (reads, and writes of
//! an absolute value) are resent after a timeout. Chassis Control is sent once; if its reply is lost
//! the client reads Get Chassis Status and decides (see [`Client::chassis_control`]).

use crate::command::{
    ChassisControl, ChassisStatus, Command, DeviceId, GetBootFlags, GetChassisStatus, GetDeviceId,
    SetSystemBootOption,
};
use crate::session::{answers, check};
use crate::wire::{Request, Response};
use crate::{BootFlags, CipherSuite, Credentials, Error, Progress, Session};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Per-attempt wait for handshake steps and retry-safe commands.
    pub timeout: Duration,
    /// Attempts for handshake steps and retry-safe commands (1 = never resend).
    pub attempts: u32,
    /// Wait for a Chassis Control reply. Some BMCs answer only after the power operation
    /// (ipmi_sim's chassis_control program takes ~1–1.4 s), so keep this ≥ 3 s.
    pub power_timeout: Duration,
    /// Cipher suites in order of preference. The next one is tried only when the BMC rejects the
    /// previous one's algorithms in its Open Session Response (no slow cipher-suite discovery).
    pub suites: Vec<CipherSuite>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(1),
            attempts: 3,
            power_timeout: Duration::from_secs(5),
            suites: vec![CipherSuite::Suite17, CipherSuite::Suite3],
        }
    }
}

/// How a Chassis Control ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOutcome {
    /// The BMC acknowledged the command.
    Acknowledged,
    /// The reply was lost, but the chassis status already shows the target power state.
    ConfirmedByStatus,
}

pub struct Client {
    socket: UdpSocket,
    session: Session,
    config: ClientConfig,
    peer: SocketAddr,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("session", &self.session)
            .finish()
    }
}

fn io_error(what: &str, addr: impl std::fmt::Display, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Error::Io(format!(
            "{what} {addr}: connection refused (nothing listening on that UDP port)"
        ))
    } else {
        Error::Io(format!("{what} {addr}: {e}"))
    }
}

impl Client {
    /// Resolves `addr` (`host:port`), opens a session (suites in the configured order) at
    /// administrator privilege. Authentication failures are returned at once, never retried.
    pub async fn connect(
        addr: &str,
        creds: Credentials,
        config: ClientConfig,
    ) -> Result<Client, Error> {
        let peer = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| Error::Io(format!("resolving {addr}: {e}")))?
            .next()
            .ok_or_else(|| Error::Io(format!("resolving {addr}: no address")))?;
        let local: SocketAddr = if peer.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| io_error("binding a UDP socket for", peer, e))?;
        socket
            .connect(peer)
            .await
            .map_err(|e| io_error("connecting to", peer, e))?;
        if config.suites.is_empty() {
            return Err(Error::State("no cipher suite configured"));
        }
        let mut last = None;
        for &suite in &config.suites {
            let mut session = Session::new(creds.clone(), suite);
            match handshake(&socket, &mut session, &config, peer).await {
                Ok(()) => {
                    return Ok(Client {
                        socket,
                        session,
                        config,
                        peer,
                    });
                }
                Err(e @ Error::UnsupportedCipherSuite { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one suite was tried"))
    }

    pub fn cipher_suite(&self) -> CipherSuite {
        self.session.suite()
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Runs one command. Retry-safe commands are resent up to `attempts` times; others are sent once.
    pub async fn execute<C: Command>(&mut self, cmd: &C) -> Result<C::Output, Error> {
        let (attempts, wait) = if C::RETRY_SAFE {
            (self.config.attempts.max(1), self.config.timeout)
        } else {
            (1, self.config.power_timeout)
        };
        let resp = self
            .request(&cmd.request(), C::NAME, attempts, wait)
            .await?;
        check(cmd, &resp)
    }

    async fn request(
        &mut self,
        req: &Request,
        what: &'static str,
        attempts: u32,
        wait: Duration,
    ) -> Result<Response, Error> {
        let (rq_seq, mut bytes) = self.session.wrap(req)?;
        let mut invalid = None;
        for attempt in 1..=attempts {
            if attempt > 1 {
                bytes = self.session.rewrap(req, rq_seq)?;
            }
            self.socket
                .send(&bytes)
                .await
                .map_err(|e| io_error("sending to", self.peer, e))?;
            let deadline = Instant::now() + wait;
            let mut buf = [0u8; 2048];
            loop {
                let n = match timeout_at(deadline, self.socket.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(r) => r.map_err(|e| io_error("receiving from", self.peer, e))?,
                };
                match self.session.unwrap(&buf[..n]) {
                    Ok(resp) if answers(req, rq_seq, &resp) => return Ok(resp),
                    // A late reply to an earlier request: not ours.
                    Ok(_) => {}
                    // Keep listening (a forged or corrupt datagram must not end a good exchange),
                    // but report it if nothing valid follows.
                    Err(e) => invalid = Some(e),
                }
            }
        }
        Err(invalid.unwrap_or(Error::NoResponse {
            what,
            attempts,
            per_attempt: wait,
        }))
    }

    pub async fn device_id(&mut self) -> Result<DeviceId, Error> {
        self.execute(&GetDeviceId).await
    }

    pub async fn chassis_status(&mut self) -> Result<ChassisStatus, Error> {
        self.execute(&GetChassisStatus).await
    }

    /// Sends a Chassis Control once. If no reply comes within `power_timeout` it is never blindly
    /// resent: the client reads Get Chassis Status; if the power state already matches the target
    /// the control counts as done; on/off (idempotent) are then sent once more; cycle, reset and
    /// soft-off, whose effect cannot be read back, end in [`Error::Unconfirmed`].
    pub async fn chassis_control(&mut self, ctl: ChassisControl) -> Result<ControlOutcome, Error> {
        match self.execute(&ctl).await {
            Ok(()) => return Ok(ControlOutcome::Acknowledged),
            Err(Error::NoResponse { .. }) => {}
            Err(e) => return Err(e),
        }
        let status = self.chassis_status().await?;
        let reached = status.power_on == ctl.target_power_on();
        let readable = ctl.is_idempotent() || ctl == ChassisControl::SoftOff;
        if reached && readable {
            return Ok(ControlOutcome::ConfirmedByStatus);
        }
        if !ctl.is_idempotent() {
            return Err(Error::Unconfirmed {
                what: match ctl {
                    ChassisControl::PowerCycle => "Chassis Control (power cycle)",
                    ChassisControl::HardReset => "Chassis Control (hard reset)",
                    _ => "Chassis Control (soft off)",
                },
            });
        }
        self.execute(&ctl)
            .await
            .map(|()| ControlOutcome::Acknowledged)
    }

    /// Set System Boot Options parameter 5, wrapped like ipmitool's `chassis bootdev`: parameter 0
    /// "set in progress", clear the BIOS boot-info acknowledge (parameter 4), the flags, "commit
    /// write", "set complete". Only the flags must succeed; BMCs without parameters 0/4 are fine.
    pub async fn set_boot_flags(&mut self, flags: BootFlags) -> Result<(), Error> {
        let in_progress = self
            .optional(&SetSystemBootOption::set_in_progress(1))
            .await?;
        self.optional(&SetSystemBootOption::clear_bios_ack())
            .await?;
        let result = self.execute(&SetSystemBootOption::flags(flags)).await;
        if in_progress {
            if result.is_ok() {
                self.optional(&SetSystemBootOption::set_in_progress(2))
                    .await?;
            }
            self.optional(&SetSystemBootOption::set_in_progress(0))
                .await?;
        }
        result
    }

    /// Runs a command whose completion code may be an error; true if it succeeded.
    async fn optional(&mut self, cmd: &SetSystemBootOption) -> Result<bool, Error> {
        match self.execute(cmd).await {
            Ok(()) => Ok(true),
            Err(Error::Completion { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Get System Boot Options parameter 5.
    pub async fn boot_flags(&mut self) -> Result<BootFlags, Error> {
        self.execute(&GetBootFlags).await
    }

    /// Closes the session and waits (one attempt) for the BMC to confirm.
    pub async fn close(mut self) -> Result<(), Error> {
        let Some(bytes) = self.session.close() else {
            return Ok(());
        };
        self.socket
            .send(&bytes)
            .await
            .map_err(|e| io_error("sending to", self.peer, e))?;
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + self.config.timeout;
        // The reply is a formality: the session is gone on our side either way.
        let _ = timeout_at(deadline, self.socket.recv(&mut buf)).await;
        Ok(())
    }
}

impl Drop for Client {
    /// Best effort: tell the BMC the session is over so it does not hold a slot until it times out.
    fn drop(&mut self) {
        if let Some(bytes) = self.session.close() {
            let _ = self.socket.try_send(&bytes);
        }
    }
}

async fn handshake(
    socket: &UdpSocket,
    session: &mut Session,
    config: &ClientConfig,
    peer: SocketAddr,
) -> Result<(), Error> {
    let attempts = config.attempts.max(1);
    let mut buf = [0u8; 2048];
    while let Some(mut out) = session.next_request() {
        let mut attempt = 1;
        'step: loop {
            socket
                .send(&out)
                .await
                .map_err(|e| io_error("sending to", peer, e))?;
            let deadline = Instant::now() + config.timeout;
            loop {
                let n = match timeout_at(deadline, socket.recv(&mut buf)).await {
                    Err(_) if attempt < attempts => {
                        attempt += 1;
                        out = session
                            .next_request()
                            .ok_or(Error::State("handshake step lost"))?;
                        continue 'step;
                    }
                    Err(_) => {
                        return Err(Error::NoResponse {
                            what: "RMCP+ session setup",
                            attempts,
                            per_attempt: config.timeout,
                        });
                    }
                    Ok(r) => r.map_err(|e| io_error("receiving from", peer, e))?,
                };
                match session.handle_response(&buf[..n]) {
                    Ok(Progress::Ignored) => {}
                    Ok(Progress::Continue) => break 'step,
                    Ok(Progress::Established) => return Ok(()),
                    Err(e) => {
                        if let Some(abort) = session.abort_packet() {
                            let _ = socket.send(abort).await;
                        }
                        return Err(e);
                    }
                }
            }
        }
    }
    Err(Error::State("handshake ended without a session"))
}
