//! The target's live network connections, from `/proc`: what goroutines waiting
//! on the network (`IO wait`) are serving. A population blocked in `IO wait` no
//! larger than the process's established connections is a set of live
//! connections (a keep-alive pool, a server's clients), not a leak.

use std::{collections::HashSet, fs, io, path::Path};

/// Established TCP connections (IPv4 and IPv6) and connected Unix stream sockets
/// of process `pid`, counted by the socket inodes it holds open.
pub fn live_connections(pid: u32) -> io::Result<u64> {
    let proc = Path::new("/proc").join(pid.to_string());
    let mut inodes = HashSet::new();
    for entry in fs::read_dir(proc.join("fd"))? {
        let Ok(link) = fs::read_link(entry?.path()) else { continue };
        if let Some(inode) = link.to_str().and_then(socket_inode) {
            inodes.insert(inode);
        }
    }
    if inodes.is_empty() {
        return Ok(0);
    }
    let mut live = 0;
    for table in ["net/tcp", "net/tcp6"] {
        if let Ok(text) = fs::read_to_string(proc.join(table)) {
            live += count_tcp_established(&text, &inodes);
        }
    }
    if let Ok(text) = fs::read_to_string(proc.join("net/unix")) {
        live += count_unix_connected(&text, &inodes);
    }
    Ok(live)
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// Rows of `/proc/net/tcp{,6}` in state `01` (ESTABLISHED) whose inode is ours.
fn count_tcp_established(text: &str, inodes: &HashSet<u64>) -> u64 {
    text.lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.get(3) == Some(&"01") && f.get(9).and_then(|i| i.parse().ok()).is_some_and(|i| inodes.contains(&i))
        })
        .count() as u64
}

/// Rows of `/proc/net/unix` in state `03` (connected) whose inode is ours.
fn count_unix_connected(text: &str, inodes: &HashSet<u64>) -> u64 {
    text.lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.get(5) == Some(&"03") && f.get(6).and_then(|i| i.parse().ok()).is_some_and(|i| inodes.contains(&i))
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_established_sockets_of_the_process() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1078 1 0 100 0 0 10 0\n\
                   1: 0100007F:9B7B 0100007F:EA08 01 00000000:00000000 00:00000000 00000000     0        0 2001 1 0 20 4 30 10 -1\n\
                   2: 0100007F:9B7C 0100007F:EA08 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 0 20 4 30 10 -1\n\
                   3: 0100007F:9B7D 0100007F:EA08 06 00000000:00000000 03:00001562 00000000     0        0 0 3 0\n";
        let ours = HashSet::from([1078, 2001]);
        assert_eq!(count_tcp_established(tcp, &ours), 1);
        let unix = "Num       RefCount Protocol Flags    Type St Inode Path\n\
                    00000000d83b4fdc: 00000003 00000000 00000000 0001 03  1074\n\
                    00000000ccf560ba: 00000003 00000000 00010000 0001 01  1075 /run/x.sock\n";
        assert_eq!(count_unix_connected(unix, &HashSet::from([1074, 1075])), 1);
        assert_eq!(socket_inode("socket:[93482]"), Some(93482));
        assert_eq!(socket_inode("pipe:[93482]"), None);
    }

    #[test]
    fn this_process_holds_an_established_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // Both ends are ours.
        assert!(live_connections(std::process::id()).unwrap() >= 2);
        drop((client, server));
    }
}
