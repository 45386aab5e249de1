//! `confabctl`: the ops CLI, talking to any node's admin API (`/admin/v1/...`).
//!
//! - `main.rs` (this file): the command line and the exit codes: 0 done, 1 failed
//!   (the node said no, or could not be reached), 2 usage.
//! - `client.rs`: one typed HTTP call per admin endpoint, and the error texts.
//! - `render.rs`: the human tables; `--json` prints the node's JSON instead.
//! - `drain.rs`: `nodes drain`, followed with a progress bar; `nodes remove`.
//! - `watch.rs`: `watch`, the live view of the cluster.
//! - `duration.rs`: durations as people write them (`5s`, `10m`).
//!
//! `completions SHELL` and `man` print what clap derives from [`Cli`]: they
//! need no node and no token.

mod client;
mod drain;
mod duration;
mod render;
mod watch;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::error::ErrorKind;
use clap::{ArgGroup, Args, CommandFactory as _, Parser, Subcommand};
use clap_complete::Shell;
use confab_proto::admin::{CanarySet, DlqReplay};
use reqwest::Url;

use crate::client::{AdminClient, Reply};

#[derive(Parser)]
#[command(
    name = "confabctl",
    version,
    about = "operate a confab cluster through any node's admin API"
)]
struct Cli {
    /// The node to talk to: any node of the cluster.
    #[arg(
        long,
        global = true,
        env = "CONFAB_NODE",
        default_value = client::DEFAULT_NODE,
        value_parser = client::parse_node_url
    )]
    node: Url,
    /// A token with scope admin (`confab token --uid ops --scope admin`).
    #[arg(long, global = true, env = "CONFAB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificates (PEM) to trust besides the system's, for an https node
    /// whose certificate a private CA signed.
    #[arg(long, global = true, env = "CONFAB_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Print the node's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a request after this long: 500ms, 5s, 1m (at most 10m).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_timeout)]
    timeout: Duration,
    /// The same in milliseconds, as confabctl took it before --timeout.
    #[arg(
        long,
        global = true,
        hide = true,
        conflicts_with = "timeout",
        value_parser = clap::value_parser!(u64).range(1..=600_000)
    )]
    timeout_ms: Option<u64>,
    #[command(subcommand)]
    verb: Verb,
}

/// The longest `--timeout`: a request that takes longer has hung.
const TIMEOUT_MAX: Duration = Duration::from_secs(600);

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = duration::parse(text)?;
    if timeout > TIMEOUT_MAX {
        return Err(format!(
            "{text:?} is too long: at most {}",
            duration::show(TIMEOUT_MAX)
        ));
    }
    Ok(timeout)
}

impl Cli {
    /// `--timeout`, or the old `--timeout-ms` when that was given.
    fn request_timeout(&self) -> Duration {
        self.timeout_ms.map_or(self.timeout, Duration::from_millis)
    }
}

#[derive(Subcommand)]
enum Verb {
    /// The node's status: readiness, sessions, ring epoch, DLQ depth, policy split.
    Status,
    /// The dialog policy: what is loaded; reload it from the flows dir.
    #[command(subcommand)]
    Policy(PolicyVerb),
    /// The canary split: which uid tails get which policy version.
    #[command(subcommand)]
    Canary(CanaryVerb),
    /// The dead-letter queue of actions that kept failing.
    #[command(subcommand)]
    Dlq(DlqVerb),
    /// One user's session.
    #[command(subcommand)]
    Session(SessionVerb),
    /// The admin audit log: who did what, when, and what came of it.
    #[command(subcommand)]
    Audit(AuditVerb),
    /// The data-key ring that seals user texts and sensitive slots at rest.
    #[command(subcommand)]
    Keys(KeysVerb),
    /// The ring: every virtual node and its owner.
    Ring,
    /// The cluster's members; `nodes drain ID` drains one, `nodes remove ID`
    /// takes one declared down out of the table.
    Nodes {
        #[command(subcommand)]
        verb: Option<NodesVerb>,
    },
    /// Cluster-wide aggregates, from every node's memory: sessions resident and
    /// turns in the last minute per node, the intent distribution, and how
    /// often each slot gets filled.
    ///
    /// The node asked asks every member at once and adds up their answers; a
    /// member that does not answer within --deadline is listed as unreachable
    /// (and left out of the totals). Counts run since each node started.
    Stats {
        /// How long the node waits for each member: 500ms, 2s (at most 10s).
        #[arg(long, default_value = "1s", value_parser = parse_stats_deadline)]
        deadline: Duration,
    },
    /// A live, full-screen view of the cluster, refreshed every second.
    ///
    /// Members with their status, sessions, turns in flight and turns per
    /// second; cluster totals; this node's turn p99 over the last interval;
    /// the ring epoch; drains in progress and migrations. q, Esc or Ctrl-C
    /// quits. When stdout is not a terminal, or with --once or --count N, it
    /// prints plain frames instead (one JSON object a line with --json).
    Watch(watch::WatchArgs),
    /// Print a completion script for SHELL: bash, zsh, fish, elvish, powershell
    /// (`source <(confabctl completions bash)`).
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
    /// Print confabctl's man page (roff) to stdout: `confabctl man > confabctl.1`.
    Man,
}

#[derive(Subcommand)]
enum NodesVerb {
    /// Move a node's sessions to the other members, then have it leave the
    /// cluster (its process stops). Shows progress until it has left.
    Drain {
        /// The node's id (from `confabctl nodes`).
        id: String,
        /// Give up waiting after this long (the drain goes on): 30s, 10m, 1h.
        #[arg(long, default_value = "10m", value_parser = duration::parse)]
        wait: Duration,
        /// The same in seconds, as confabctl took it before --wait.
        #[arg(
            long,
            hide = true,
            conflicts_with = "wait",
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        wait_s: Option<u64>,
    },
    /// Take a member declared down (gone for good: its machine is lost) out of
    /// the member table, so that it is no longer listed or dialled. A live
    /// member is refused: drain it instead. If it comes back, it joins again.
    Remove {
        /// The node's id (from `confabctl nodes`, status down).
        id: String,
    },
}

#[derive(Subcommand)]
enum PolicyVerb {
    /// The loaded versions, what serves, and the last refused reload.
    Status,
    /// Reload the flow files; if they are wrong, the previous policy keeps serving.
    Reload,
}

#[derive(Subcommand)]
enum CanaryVerb {
    /// Send the users whose uid ends in one of TAILS to VERSION (10% per tail).
    Set {
        /// A loaded policy version.
        version: String,
        /// uid tails, 0 to 9, comma-separated: `--tails 0,1`.
        #[arg(
            long,
            required = true,
            value_delimiter = ',',
            value_parser = clap::value_parser!(u8).range(0..=9)
        )]
        tails: Vec<u8>,
    },
    /// The split in force.
    Status,
    /// Send everyone back to the stable version.
    Rollback,
    /// Make the canary the stable version for everyone.
    Promote,
}

#[derive(Subcommand)]
enum AuditVerb {
    /// The newest admin actions first.
    List {
        /// Show at most this many entries (up to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
}

#[derive(Subcommand)]
enum KeysVerb {
    /// Add a key version cluster-wide: every node writes with it within a second;
    /// old versions still decrypt, and stored snapshots move to it in the background.
    Rotate,
    /// Each version, and how many stored snapshots and events it still covers.
    Status,
    /// Remove a version; refused while any snapshot or event still uses it.
    Retire {
        /// The version: 1, 2... (or v1, v2...).
        #[arg(value_parser = parse_key_version)]
        version: u32,
    },
}

/// The longest `stats --deadline` a node accepts.
const STATS_DEADLINE_MAX: Duration = Duration::from_secs(10);

fn parse_stats_deadline(text: &str) -> Result<Duration, String> {
    let deadline = duration::parse(text)?;
    if deadline < Duration::from_millis(1) || deadline > STATS_DEADLINE_MAX {
        return Err(format!(
            "{text:?} is out of range: 1ms to {}",
            duration::show(STATS_DEADLINE_MAX)
        ));
    }
    Ok(deadline)
}

fn parse_key_version(text: &str) -> Result<u32, String> {
    text.trim_start_matches('v')
        .parse()
        .map_err(|_| format!("{text:?} is not a key version: 1, 2... or v1, v2..."))
}

#[derive(Subcommand)]
enum DlqVerb {
    /// The oldest entries waiting.
    List {
        /// Show at most this many entries.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
    },
    /// Run entries' actions again: one by ID, or --all.
    Replay(ReplayArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("target").required(true).args(["id", "all"])))]
struct ReplayArgs {
    /// The entry to replay (from `dlq list`).
    id: Option<u64>,
    /// Replay every entry.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum SessionVerb {
    /// A session's slots (sensitive ones masked), seq, owner and epoch.
    Show {
        /// The user id.
        uid: String,
    },
    /// Which node owns a uid on the ring (the session is not touched).
    Locate {
        /// The user id.
        uid: String,
    },
}

/// How a verb that ran ended: exit 0 or 1.
enum Outcome {
    /// The node did what was asked.
    Done,
    /// The node answered, and the answer is a failure (already said on stderr).
    Failed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // What clap derives needs no node and no token.
    match cli.verb {
        Verb::Completions { shell } => return print_completions(shell),
        Verb::Man => return print_man(),
        _ => {}
    }
    let timeout = cli.request_timeout();
    let Some(token) = cli.token.filter(|t| !t.trim().is_empty()) else {
        Cli::command()
            .error(
                ErrorKind::MissingRequiredArgument,
                "no admin token: pass --token or set CONFAB_TOKEN \
                 (make one with `confab token --uid ops --scope admin`)",
            )
            .exit()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let client = AdminClient::new(cli.node, token, timeout, cli.ca_file.as_deref())?;
        run(cli.verb, &client, cli.json).await
    });
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one verb against the node and prints its answer.
async fn run(verb: Verb, client: &AdminClient, json: bool) -> anyhow::Result<Outcome> {
    match verb {
        Verb::Status => show(client.status().await?, json, render::status),
        Verb::Policy(PolicyVerb::Status) => show(client.policy().await?, json, |p| {
            render::policy(p, now_ms())
        }),
        Verb::Policy(PolicyVerb::Reload) => policy_reload(client, json).await,
        Verb::Canary(verb) => {
            let reply = match verb {
                CanaryVerb::Set { version, tails } => {
                    let mut tails = tails;
                    tails.sort_unstable();
                    tails.dedup();
                    client.canary_set(&CanarySet { version, tails }).await?
                }
                CanaryVerb::Status => client.canary().await?,
                CanaryVerb::Rollback => client.canary_rollback().await?,
                CanaryVerb::Promote => client.canary_promote().await?,
            };
            show(reply, json, render::canary)
        }
        Verb::Dlq(DlqVerb::List { limit }) => show(client.dlq_list(limit).await?, json, |l| {
            render::dlq_list(l, now_ms())
        }),
        Verb::Dlq(DlqVerb::Replay(args)) => dlq_replay(client, args, json).await,
        Verb::Session(SessionVerb::Show { uid }) => {
            show(client.session(&uid).await?, json, render::session)
        }
        Verb::Session(SessionVerb::Locate { uid }) => {
            show(client.locate(&uid).await?, json, render::locate)
        }
        Verb::Audit(AuditVerb::List { limit }) => show(client.audit(limit).await?, json, |l| {
            render::audit(l, now_ms())
        }),
        Verb::Keys(KeysVerb::Status) => show(client.keys().await?, json, render::keys),
        Verb::Keys(KeysVerb::Rotate) => show(client.keys_rotate().await?, json, |c| {
            format!(
                "added key version v{}: new writes use it; the ring holds {}",
                c.version,
                render::key_versions(&c.versions)
            )
        }),
        Verb::Keys(KeysVerb::Retire { version }) => {
            show(client.keys_retire(version).await?, json, |c| {
                format!(
                    "retired key version v{}; the ring holds {}",
                    c.version,
                    render::key_versions(&c.versions)
                )
            })
        }
        Verb::Ring => show(client.ring().await?, json, render::ring),
        Verb::Nodes { verb: None } => show(client.nodes().await?, json, render::nodes),
        Verb::Nodes {
            verb: Some(NodesVerb::Drain { id, wait, wait_s }),
        } => {
            let wait = wait_s.map_or(wait, Duration::from_secs);
            drain::run(client, &id, wait, json).await
        }
        Verb::Nodes {
            verb: Some(NodesVerb::Remove { id }),
        } => drain::remove(client, &id, json).await,
        Verb::Stats { deadline } => {
            let reply = client.stats(deadline).await?;
            let unreachable = reply.body.unreachable.clone();
            show(reply, json, render::stats)?;
            if !unreachable.is_empty() {
                eprintln!(
                    "warning: {} did not answer within {}: the totals leave {} out",
                    unreachable.join(", "),
                    duration::show(deadline),
                    if unreachable.len() == 1 { "it" } else { "them" }
                );
            }
            Ok(Outcome::Done)
        }
        Verb::Watch(args) => watch::run(client, &args, json).await,
        Verb::Completions { .. } | Verb::Man => {
            unreachable!("completions and man are printed before any request")
        }
    }
}

/// `completions SHELL`: the script on stdout.
fn print_completions(shell: Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "confabctl", &mut script);
    print_bytes(&script)
}

/// `man`: the roff page on stdout.
fn print_man() -> ExitCode {
    let mut page = Vec::new();
    if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
        eprintln!("error: cannot render the man page: {e}");
        return ExitCode::FAILURE;
    }
    print_bytes(&page)
}

/// Writes `bytes` to stdout; a closed pipe (`| head`) is not an error.
fn print_bytes(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// `policy reload`: a refusal names the file, line and column, and exits 1.
async fn policy_reload(client: &AdminClient, json: bool) -> anyhow::Result<Outcome> {
    let reply = client.policy_reload().await?;
    let report = &reply.body;
    if report.ok && report.error.is_none() {
        return show(reply, json, render::reload);
    }
    if json {
        emit(&pretty(&reply.raw))?;
    }
    match &report.error {
        Some(error) => eprintln!("policy reload refused: {error}"),
        None => eprintln!("policy reload refused"),
    }
    eprintln!("the previous policy still serves; fix the files and reload again");
    Ok(Outcome::Failed)
}

/// `dlq replay`: exits 1 when any entry's action failed again.
async fn dlq_replay(client: &AdminClient, args: ReplayArgs, json: bool) -> anyhow::Result<Outcome> {
    let replay = DlqReplay {
        id: args.id,
        all: args.all,
    };
    let reply = client.dlq_replay(&replay).await?;
    let failed = reply.body.outcomes.iter().filter(|o| !o.ok).count();
    let tried = reply.body.outcomes.len();
    show(reply, json, render::dlq_replay)?;
    if failed == 0 {
        return Ok(Outcome::Done);
    }
    eprintln!("error: {failed} of {tried} replays failed; those entries stay in the queue");
    Ok(Outcome::Failed)
}

/// Prints an answer: its JSON with `--json`, otherwise its human table.
fn show<T>(
    reply: Reply<T>,
    json: bool,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<Outcome> {
    if json {
        emit(&pretty(&reply.raw))?;
    } else {
        emit(&render(&reply.body))?;
    }
    Ok(Outcome::Done)
}

/// JSON indented for people; still one document for `jq`.
fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Writes `text` and a newline to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Now, in ms since the Unix epoch, for entry ages.
pub(crate) fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}
