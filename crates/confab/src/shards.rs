//! `confab shards`: the MySQL shard map, and moving a shard to another server
//! with the cluster up (docs/storage.md, "Moving a shard").
//!
//! It talks to the databases, as `vtctl` does, not to a node: it needs the
//! same config (and credentials) as the nodes, and no node has to be up.

use crate::config::Config;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use confab_store::mysql::{self, MySqlOptions, MySqlStore, redacted};
use figment::Figment;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(crate) struct ShardsArgs {
    /// The TOML config file the nodes run with (see config/node.toml); its
    /// `store.mysql_url` is the control server.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ShardsCommand,
}

#[derive(Debug, Subcommand)]
enum ShardsCommand {
    /// The shard map in force: which server holds each range of shards.
    List,
    /// Move SHARD to the server at --to, with the cluster up: copy, freeze the
    /// shard for its last changes, switch the map in the control store, clean up.
    Move {
        /// The shard, 0 to 63 (a uid's shard is CRC32(uid) % 64).
        shard: u32,
        /// The new server, mysql://user:password@host:port/database.
        #[arg(long)]
        to: String,
    },
}

pub(crate) async fn run(args: ShardsArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref(), Figment::new())?;
    let s = &config.store;
    anyhow::ensure!(
        !s.mysql_url.is_empty(),
        "confab shards needs store.mysql_url (the control server): the embedded store has no shard servers"
    );
    let store = MySqlStore::open_sharded(
        &s.mysql_url,
        &s.mysql_shards,
        &MySqlOptions {
            connections_max: 4,
            ..MySqlOptions::default()
        },
    )
    .await
    .context("store.mysql_url")?;
    match args.command {
        ShardsCommand::List => {
            let ranges: Vec<_> = store
                .shard_map()
                .ranges()
                .into_iter()
                .map(|r| mysql::ShardRange {
                    url: redacted(&r.url),
                    ..r
                })
                .collect();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&ranges)?);
            } else {
                println!("{:<7} {:<7} SERVER", "FROM", "TO");
                for r in ranges {
                    println!("{:<7} {:<7} {}", r.from, r.to, r.url);
                }
            }
        }
        ShardsCommand::Move { shard, to } => {
            let quiet = args.json;
            let report = mysql::mover::move_shard(&store, shard, &to, |step| {
                if !quiet {
                    eprintln!("{step}");
                }
            })
            .await
            .with_context(|| format!("moving shard {shard}"))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "shard {} moved from {} to {}: {} events, {} fences, {} snapshots; writes waited {} ms; map revision {}",
                    report.shard,
                    report.from,
                    report.to,
                    report.events,
                    report.fences,
                    report.snapshots,
                    report.frozen_ms,
                    report.revision
                );
            }
        }
    }
    Ok(())
}
