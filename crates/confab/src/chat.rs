//! `confab chat`: a line-by-line chat client for the shell.

use crate::{secrets, token};
use anyhow::Context;
use confab_proto::{ClientFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(clap::Args)]
pub(crate) struct ChatArgs {
    /// The node's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/v1/ws")]
    url: String,
    /// Chat as this uid (a token is signed with the dev secret).
    #[arg(long, default_value = "demo")]
    uid: String,
    /// Use this token instead of signing one.
    #[arg(long)]
    token: Option<String>,
    /// The HS256 secret (default: CONFAB_AUTH__JWT_SECRET, then the data dir's dev secret).
    #[arg(long, env = "CONFAB_AUTH__JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The data dir whose dev secret to use.
    #[arg(long, default_value = "./confab-data")]
    data_dir: PathBuf,
}

pub(crate) async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let token = match args.token {
        Some(token) => token,
        None => {
            let secret =
                secrets::jwt_secret(args.jwt_secret.as_deref().unwrap_or(""), &args.data_dir)?;
            token::sign(&secret, &args.uid, "chat", Duration::from_secs(24 * 3600))?
        }
    };
    let mut request = args.url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let (mut sink, mut stream) = socket.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let run_id = std::process::id();
    let mut n = 0u64;
    // Turns sent and not yet answered; at the end of input, wait for them.
    let mut pending = 0usize;
    let mut input_open = true;
    while input_open || pending > 0 {
        tokio::select! {
            line = lines.next_line(), if input_open => {
                let Some(line) = line? else {
                    input_open = false;
                    continue;
                };
                if line.trim().is_empty() { continue; }
                n += 1;
                pending += 1;
                let frame = ClientFrame::Say { id: format!("chat-{run_id}-{n}"), text: line };
                sink.send(Message::text(serde_json::to_string(&frame)?)).await?;
            }
            message = stream.next() => {
                let Some(message) = message else { break };
                match message? {
                    Message::Text(text) if print_frame(&text) => {
                        pending = pending.saturating_sub(1);
                    }
                    Message::Close(frame) => {
                        println!("[closed {}]", frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default());
                        break;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Prints a server frame; returns whether it ends a turn (a reply or a turn's error).
fn print_frame(text: &str) -> bool {
    match serde_json::from_str::<ServerFrame>(text) {
        Ok(ServerFrame::Hello {
            uid,
            node,
            last_seq,
            ..
        }) => {
            println!(
                "[connected as {uid} to {node}, last seq {last_seq}; type a line and press enter]"
            );
            false
        }
        Ok(ServerFrame::Reply {
            text,
            intent,
            slots,
            ..
        }) => {
            let slots: Vec<String> = slots.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("bot: {text}   [{intent} {}]", slots.join(" "));
            true
        }
        Ok(ServerFrame::Error { id, code, message }) => {
            println!("[error {code:?}: {message}]");
            id.is_some()
        }
        Ok(ServerFrame::Ack { .. } | ServerFrame::Pong) => false,
        Err(_) => {
            println!("{text}");
            false
        }
    }
}
