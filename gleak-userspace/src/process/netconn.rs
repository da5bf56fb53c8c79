//! The target's live network connections, from `/proc`: what goroutines waiting
//! on the network (`IO wait`) are serving. A population blocked in `IO wait` no
//! larger than the process's established connections is a set of live
//! connections (a keep-alive pool, a server's clients), not a leak.

use std::{collections::HashSet, io};

use procfs::{
    net::{TcpState, UnixState},
    process::{FDTarget, Process},
};

use crate::process::target::proc_io_error;

/// Established TCP connections (IPv4 and IPv6) and connected Unix stream sockets
/// of process `pid`, counted by the socket inodes it holds open.
pub fn live_connections(pid: u32) -> io::Result<u64> {
    let process = Process::new(pid as i32).map_err(proc_io_error)?;
    let inodes: HashSet<u64> = process
        .fd()
        .map_err(proc_io_error)?
        .flatten()
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect();
    if inodes.is_empty() {
        return Ok(0);
    }
    // The tables are the process's network namespace's, as /proc/PID/net shows them.
    let tcp = [process.tcp(), process.tcp6()].into_iter().flatten().flatten();
    let established = tcp.filter(|e| e.state == TcpState::Established && inodes.contains(&e.inode)).count();
    let unix = process.unix().unwrap_or_default();
    let connected = unix.iter().filter(|e| e.state == UnixState::CONNECTED && inodes.contains(&e.inode)).count();
    Ok((established + connected) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_holds_an_established_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (unix_a, unix_b) = std::os::unix::net::UnixStream::pair().unwrap();
        // Both ends of each are ours; the listener is not a connection.
        assert!(live_connections(std::process::id()).unwrap() >= 4);
        drop((client, server, unix_a, unix_b, listener));
    }
}
