//! `confab`: run a node (`confab node`), a local cluster (`confab up`), mint a
//! token (`confab token`) or chat from a shell (`confab chat`).

mod chat;
mod config;
mod flows;
mod node;
mod secrets;
mod token;
mod up;

use clap::{Parser, Subcommand};

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
    let cli = Cli::parse();
    let bug = match planted_bug() {
        Ok(bug) => bug,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
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
