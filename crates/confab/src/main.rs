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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
