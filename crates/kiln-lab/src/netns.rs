//! Joining the lab's network namespace from this process: the demo's admin API client runs
//! there (the server's admin API listens on the namespace's loopback).

use std::fs::File;
use std::os::fd::AsFd;

use anyhow::Context;
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Moves the calling thread (only it: the namespace is a per-thread setting) into the network
/// namespace `ns` that `ip netns add` made. Sockets it opens from now on live there; processes
/// it starts begin there.
pub fn enter(ns: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{ns}");
    let f = File::open(&path).with_context(|| format!("opening {path}"))?;
    move_into_link_name_space(f.as_fd(), Some(LinkNameSpaceType::Network))
        .with_context(|| format!("joining the network namespace {ns}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_that_does_not_exist_is_named() {
        let e = enter("kiln-no-such-namespace-for-tests").unwrap_err();
        assert!(
            format!("{e:#}").contains("/run/netns/kiln-no-such-namespace-for-tests"),
            "{e:#}"
        );
    }
}
