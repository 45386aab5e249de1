//! A node on MariaDB and Redis, as production runs it: configured by
//! `CONFAB_STORE__*` variables, durable across restarts, and refusing a tampered
//! snapshot in either tier while keeping the session whole.

mod common;

use common::*;
use confab_proto::ServerFrame;
use confab_testkit::{TestDatabase, shared_mysql_url, shared_redis_url};
use sqlx::Connection;

#[tokio::test]
async fn a_node_on_mysql_and_redis_keeps_sessions_and_refuses_tampered_snapshots() {
    let db = TestDatabase::create(&shared_mysql_url()).await;
    let prefix = format!("confab-node-test-{}", std::process::id());
    let env = [
        ("CONFAB_STORE__MYSQL_URL", db.url.as_str()),
        ("CONFAB_STORE__REDIS_URL", &shared_redis_url()),
        ("CONFAB_STORE__REDIS_KEY_PREFIX", prefix.as_str()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &env).await;
    let mut client = Client::as_uid(&node, "alice").await;
    client.say("m-1", "这款鞋有货吗").await;
    client.say("m-2", "39码").await;
    client.say("m-3", "黑色").await;
    drop(client);
    node.stop().await; // a clean stop snapshots alice in both tiers
    assert!(
        !dir.path().join("confab.db").exists(),
        "with store.mysql_url set, the embedded store is not used"
    );

    // Every event is in alice's shard table, and her snapshot in both tiers.
    let mut mysql = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
    let (events,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM events_{:02} WHERE uid = 'alice'",
        confab_store::mysql::shard_of(&confab_core::Uid::new("alice").unwrap())
    )))
    .fetch_one(&mut mysql)
    .await
    .unwrap();
    assert_eq!(events, 9);
    // Tamper with both copies of the snapshot: flip its last byte in MySQL, and
    // overwrite it in Redis.
    let changed = sqlx::query(
        "UPDATE snapshots SET body = CONCAT(LEFT(body, LENGTH(body) - 1), \
         CHAR(ASCII(RIGHT(body, 1)) ^ 1)) WHERE uid = 'alice'",
    )
    .execute(&mut mysql)
    .await
    .unwrap();
    assert_eq!(
        changed.rows_affected(),
        1,
        "the clean stop wrote a snapshot"
    );
    let mut redis = redis::Client::open(shared_redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let hash = format!("{prefix}:{{alice}}:s");
    let fields: i64 = redis::cmd("HSET")
        .arg(&hash)
        .arg("snap")
        .arg("CFSN not a snapshot")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(fields, 0, "the clean stop cached the snapshot in Redis");

    let node = Node::start_with(dir.path(), &env).await;
    let mut client = Client::as_uid(&node, "alice").await;
    assert_eq!(client.last_seq(), 9, "rebuilt from the events");
    let (ack, reply) = client.say("m-4", "还有白色的吗").await;
    assert_eq!(ack, 10);
    let ServerFrame::Reply { slots, .. } = &reply else {
        unreachable!()
    };
    assert_eq!(slots.get("size").map(String::as_str), Some("39"));
    let (_, metrics) = http_get(node.port, "/metrics").await.unwrap();
    assert!(
        metrics.contains("confab_snapshot_checksum_failures_total 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("confab_store_requests_total")
                && l.contains("tier=\"redis\"")
                && l.contains("result=\"hit\"")),
        "Redis served reads: {metrics}"
    );
    drop(client);
    node.stop().await;
    let _: i64 = redis::cmd("DEL")
        .arg(&hash)
        .arg(format!("{prefix}:{{alice}}:e"))
        .query_async(&mut redis)
        .await
        .unwrap();
    db.drop_database().await;
}
