//! `confab`: run a node (`confab node`), a local cluster (`confab up`), mint a
//! token (`confab token`) or chat from a shell (`confab chat`); `confab
//! completions SHELL` and `confab man` print what clap derives from [`Cli`].

mod chat;
mod config;
mod flows;
mod node;
mod secrets;
mod shards;
mod telemetry;
mod token;
mod up;

use clap::{CommandFactory as _, Parser, Subcommand};
use std::io::Write as _;

/// mimalloc: glibc's malloc took a third of a node's CPU under load (perf), much of
/// it in `malloc_consolidate`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "confab", version, about = "chat sessions as supervised actors")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local cluster on the embedded store, ready to chat with.
    Up(up::UpArgs),
    /// Run one node.
    Node(node::NodeArgs),
    /// Print a signed token.
    Token(token::TokenArgs),
    /// Chat with a node from this shell: each line you type is one turn.
    Chat(chat::ChatArgs),
    /// The MySQL shard map: list it, or move a shard to another server with the
    /// cluster up.
    Shards(shards::ShardsArgs),
    /// Print a completion script for SHELL: bash, zsh, fish, elvish, powershell
    /// (`source <(confab completions bash)`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print confab's man page (roff) to stdout: `confab man > confab.1`.
    Man,
}

/// `completions SHELL`: the script on stdout.
fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "confab", &mut script);
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

/// The planted bug this process runs with (`CONFAB_MUTATION`): only in a
/// build made for it (`--features mutations`), for the nemesis to show that
/// its checker catches what the simulator's invariants catch. Any other build
/// refuses the variable rather than run correct code under a test that
/// expects a bug.
fn planted_bug() -> Result<Option<confab_core::mutation::Mutation>, String> {
    let Ok(name) = std::env::var("CONFAB_MUTATION") else {
        return Ok(None);
    };
    if !cfg!(feature = "mutations") {
        return Err(format!(
            "CONFAB_MUTATION={name}: this build has no planted bugs (build with --features mutations)"
        ));
    }
    confab_core::mutation::Mutation::from_name(&name)
        .map(Some)
        .ok_or_else(|| format!("CONFAB_MUTATION={name}: no such planted bug"))
}

fn main() -> ExitCode {
    // No transparent huge pages for this process (nor the nodes `confab up`
    // starts, which inherit the flag): mimalloc asks for them, and the first
    // touch of a fresh 2 MiB region makes the kernel zero all of it. At a
    // join, zeroing pages was a third of the cluster's CPU in the first 200 ms
    // (perf). Without them `confab-bench rebalance` measured 6 % less memory
    // per resident session in every run; the node CPU per moved session did
    // not change beyond the runs' spread (docs/benchmarks.md).
    // Best effort: a kernel without the flag keeps its default.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    // What clap derives needs no runtime.
    match cli.command {
        Command::Completions { shell } => return print_completions(shell),
        Command::Man => return print_man(),
        _ => {}
    }
    let bug = match planted_bug() {
        Ok(bug) => bug,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(cli.command, Command::Node(_))
        && let Err(e) = node::stop_with_parent()
    {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    #[cfg(feature = "mutations")]
    if let Some(bug) = bug {
        // The switch is per thread: every thread the runtime starts sets it.
        confab_core::mutation::set(Some(bug));
        builder.on_thread_start(move || confab_core::mutation::set(Some(bug)));
        eprintln!("warning: running with the planted bug {}", bug.name());
    }
    #[cfg(not(feature = "mutations"))]
    let _ = bug;
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Node(args) => node::run(args).await,
            Command::Token(args) => token::run(&args),
            Command::Chat(args) => chat::run(args).await,
            Command::Shards(args) => shards::run(args).await,
            Command::Completions { .. } | Command::Man => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
