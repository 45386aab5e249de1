//! The private Redis Cluster does what it says: three masters with a replica
//! each, a killed master's replica takes over with its data, a slot moves with
//! ASK then MOVED on the way, and nothing is left running once it is dropped.

use confab_testkit::PrivateRedisCluster;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends one inline command to the node on `port` and returns its first reply
/// line.
fn command(port: u16, command: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).unwrap();
        reply.push(byte[0]);
    }
    String::from_utf8_lossy(&reply).trim_end().to_owned()
}

#[test]
fn a_killed_master_is_replaced_by_its_replica_with_its_data() {
    let started = Instant::now();
    let mut cluster = PrivateRedisCluster::start();
    eprintln!("PrivateRedisCluster::start took {:?}", started.elapsed());
    let ports: Vec<u16> = cluster.live_ports().collect();
    assert_eq!(ports.len(), 6);
    assert!(!ports.contains(&6379), "never the shared server");
    assert_eq!(cluster.seed_urls().len(), 6);
    assert_eq!(cluster.masters().len(), 3);

    let key = "k:{alice}:s";
    let slot = cluster.slot_of(key);
    assert_eq!(slot, cluster.slot_of("{alice}"), "the hash tag decides");
    let master = cluster.master_of_slot(slot);
    assert_eq!(command(master, &format!("SET {key} v1")), "+OK");
    // Another node sends the client to the master.
    let other = *ports.iter().find(|&&p| p != master).unwrap();
    assert_eq!(
        command(other, &format!("GET {key}")),
        format!("-MOVED {slot} 127.0.0.1:{master}")
    );
    // The replica has the write before the master dies.
    assert_eq!(command(master, "WAIT 1 5000"), ":1");

    let killed = cluster.kill_master_of(key);
    assert_eq!((killed.port, killed.slot), (master, slot));
    let refused = TcpStream::connect(("127.0.0.1", master)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    let (promoted, after) = cluster.wait_for_failover(&killed, Duration::from_secs(30));
    eprintln!("127.0.0.1:{promoted} took over slot {slot} {after:?} after the kill");
    assert_ne!(promoted, master);
    assert_eq!(cluster.master_of_slot(slot), promoted);
    assert_eq!(cluster.masters().len(), 3, "the replica is a master now");
    assert_eq!(cluster.seed_urls().len(), 5, "the dead node is no seed");
    assert_eq!(command(promoted, &format!("GET {key}")), "$2");

    drop(cluster);
    for port in ports {
        let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{port}");
    }
}

#[test]
fn a_migrating_slot_answers_ask_then_moved() {
    let cluster = PrivateRedisCluster::start();
    let key = "k:{bob}:e";
    let slot = cluster.slot_of(key);
    let from = cluster.master_of_slot(slot);
    let to = *cluster.masters().iter().find(|&&m| m != from).unwrap();
    assert_eq!(command(from, &format!("RPUSH {key} a b")), ":2");

    let migration = cluster.begin_migration(slot, to);
    assert_eq!((migration.from(), migration.to()), (from, to));
    // The keys are still on the old owner: it serves them.
    assert_eq!(command(from, &format!("LLEN {key}")), ":2");
    assert_eq!(migration.move_keys(), 1);
    assert_eq!(
        command(from, &format!("LLEN {key}")),
        format!("-ASK {slot} 127.0.0.1:{to}")
    );
    migration.finish();
    assert_eq!(
        command(from, &format!("LLEN {key}")),
        format!("-MOVED {slot} 127.0.0.1:{to}")
    );
    assert_eq!(command(to, &format!("LLEN {key}")), ":2");
    assert_eq!(cluster.master_of_slot(slot), to);
}
