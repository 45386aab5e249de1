//! Each helper does what it says: the private servers die and come back, the
//! proxy delays, test databases come and go.

use confab_testkit::{DelayProxy, PrivateMariaDb, PrivateRedis, TestDatabase, shared_mysql_url};
use sqlx::Connection;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Sends one inline command to the Redis server on `port` and returns its
/// first reply line.
fn redis_command(port: u16, command: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\r\n").as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte)?;
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

#[test]
fn private_redis_dies_and_comes_back_empty() {
    let started = Instant::now();
    let mut redis = PrivateRedis::start();
    eprintln!("PrivateRedis::start took {:?}", started.elapsed());
    let port = redis.port();
    assert_ne!(port, 6379);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    assert!(redis.is_running());
    assert_eq!(redis_command(port, "PING").unwrap(), "+PONG");
    assert_eq!(redis_command(port, "SET k v").unwrap(), "+OK");

    redis.kill();
    assert!(!redis.is_running());
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    let started = Instant::now();
    redis.restart();
    eprintln!("PrivateRedis::restart took {:?}", started.elapsed());
    assert!(redis.is_running());
    assert_eq!(redis_command(port, "PING").unwrap(), "+PONG");
    // No persistence: the key died with the server.
    assert_eq!(redis_command(port, "GET k").unwrap(), "$-1");
}

#[test]
fn dropping_a_private_redis_stops_it() {
    let redis = PrivateRedis::start();
    let port = redis.port();
    drop(redis);
    let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
}

#[test]
#[should_panic(expected = "Address already in use")]
fn a_private_redis_that_cannot_restart_panics_with_its_log() {
    let mut redis = PrivateRedis::start();
    redis.kill();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", redis.port())).unwrap();
    redis.restart();
}

// A tokio test on purpose: `start` and `restart` block, but must work from
// inside a runtime.
#[tokio::test(flavor = "multi_thread")]
async fn private_mariadb_keeps_committed_rows_across_a_kill() {
    let started = Instant::now();
    let mut db = PrivateMariaDb::start();
    eprintln!("PrivateMariaDb::start took {:?}", started.elapsed());
    let port = db.port();
    assert_ne!(port, 3306);
    assert_eq!(db.url(), format!("mysql://root@127.0.0.1:{port}/test"));
    assert!(db.is_running());

    let mut conn = MySqlConnection::connect(&db.url()).await.unwrap();
    let (one,): (i32,) = sqlx::query_as("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    sqlx::query("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(16)) ENGINE=InnoDB")
        .execute(&mut conn)
        .await
        .unwrap();
    // Autocommit: committed when `execute` returns.
    sqlx::query("INSERT INTO t VALUES (1, 'kept')")
        .execute(&mut conn)
        .await
        .unwrap();

    db.kill();
    assert!(!db.is_running());
    assert!(MySqlConnection::connect(&db.url()).await.is_err());
    drop(conn);

    let started = Instant::now();
    db.restart();
    eprintln!(
        "PrivateMariaDb::restart (after SIGKILL) took {:?}",
        started.elapsed()
    );
    assert!(db.is_running());
    let mut conn = MySqlConnection::connect(&db.url()).await.unwrap();
    let (v,): (String,) = sqlx::query_as("SELECT v FROM t WHERE id = 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, "kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn test_databases_on_a_private_mariadb() {
    let db = PrivateMariaDb::start();
    let test_db = TestDatabase::create(&db.server_url()).await;
    let mut conn = MySqlConnection::connect(&test_db.url).await.unwrap();
    let (name,): (String,) = sqlx::query_as("SELECT DATABASE()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(name, test_db.name);
    drop(conn);
    test_db.drop_database().await;
}

// A plain test on purpose: `start` needs no runtime of the caller's.
#[test]
#[should_panic(expected = "Address already in use")]
fn a_private_mariadb_that_cannot_restart_panics_with_its_log() {
    let mut db = PrivateMariaDb::start();
    db.kill();
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", db.port())).unwrap();
    db.restart();
}

/// The shared MariaDB's address, from its URL.
async fn shared_mysql_addr() -> SocketAddr {
    let options: MySqlConnectOptions = shared_mysql_url().parse().unwrap();
    tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn delay_proxy_delays_open_connections() {
    let proxy = DelayProxy::start(shared_mysql_addr().await).await;
    assert_eq!(proxy.addr().ip(), std::net::Ipv4Addr::LOCALHOST);
    let url = format!("mysql://root@127.0.0.1:{}", proxy.port());
    let mut conn = MySqlConnection::connect(&url)
        .await
        .expect("MariaDB must run on 127.0.0.1:3306 (.ci/run starts it when installed)");
    let (one,): (i32,) = sqlx::query_as("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);

    // On the connection already open: the query is held 200 ms on its way
    // there and its result another 200 ms on its way back.
    proxy.set_delay(Duration::from_millis(200));
    assert_eq!(proxy.delay(), Duration::from_millis(200));
    let started = Instant::now();
    let (one,): (i32,) = sqlx::query_as("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(one, 1);
    assert!(took >= Duration::from_millis(400), "took {took:?}");

    // New connections are delayed too, and still work.
    let started = Instant::now();
    let mut other = MySqlConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut other).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));

    proxy.set_delay(Duration::ZERO);
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_delay_proxy_closes_its_connections() {
    let proxy = DelayProxy::start(shared_mysql_addr().await).await;
    let url = format!("mysql://root@127.0.0.1:{}", proxy.port());
    let mut conn = MySqlConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
    drop(proxy);
    // Aborting the tasks is asynchronous; give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());
    assert!(MySqlConnection::connect(&url).await.is_err());
}

#[tokio::test]
async fn test_databases_are_fresh_and_dropped() {
    let a = TestDatabase::create(&shared_mysql_url()).await;
    let b = TestDatabase::create(&shared_mysql_url()).await;
    assert_ne!(a.name, b.name);
    assert!(
        a.name
            .starts_with(&format!("confab_test_{}_", std::process::id()))
    );
    assert!(a.name.len() <= 64);
    assert_eq!(
        a.url,
        format!("{}/{}", shared_mysql_url().trim_end_matches('/'), a.name)
    );

    let mut conn = MySqlConnection::connect(&a.url).await.unwrap();
    sqlx::query("CREATE TABLE t (id INT PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .unwrap();
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 1);
    drop(conn);

    let name = a.name.clone();
    a.drop_database().await;
    b.drop_database().await;
    let mut conn = MySqlConnection::connect(&shared_mysql_url()).await.unwrap();
    let (left,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(left, 0);
}
