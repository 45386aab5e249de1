//! The test network's faults on real namespaces (needs root, as CI runs).

use confab_testkit::netns::Network;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Connects to `to` from inside host `netns`, sends `ping` and reads the echo;
/// returns what came back and how long the connect took.
fn echo_from(netns: &str, to: SocketAddr) -> (Vec<u8>, Duration) {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let started = Instant::now();
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(10)).unwrap();
        let connected = started.elapsed();
        stream.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).unwrap();
        (back.to_vec(), connected)
    })
    .join()
    .unwrap()
}

#[test]
fn a_delayed_host_waits_out_the_delay_and_loses_nothing() {
    let net = Network::create(1).expect("the machine makes the test network");
    let listener = TcpListener::bind((net.gateway(), 0)).unwrap();
    let to = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4];
            if stream.read_exact(&mut buf).is_ok() {
                let _ = stream.write_all(&buf);
            }
        }
    });
    let netns = net.hosts()[0].netns.clone();

    let delay = Duration::from_millis(300);
    let latency = net.delay(0, delay).expect("the kernel queues packets");
    let (back, connected) = echo_from(&netns, to);
    assert_eq!(back, b"ping");
    // The SYN waited in the queue: the connect cannot have been faster.
    assert!(connected >= delay, "connected after {connected:?}");

    net.heal(0).unwrap();
    drop(latency);
    let (back, _) = echo_from(&netns, to);
    assert_eq!(back, b"ping", "healed, the host talks again");
}
