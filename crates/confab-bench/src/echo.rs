//! The echo floor: protocol v1's frames with no session, no dialog, no store.

use axum::Router;
use axum::extract::WebSocketUpgrade;
use axum::extract::ws::{Message, WebSocket};
use axum::routing::get;
use confab_proto::{ClientFrame, ServerFrame};
use std::collections::BTreeMap;

#[derive(clap::Args)]
pub(crate) struct EchoArgs {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 9090)]
    port: u16,
}

pub(crate) async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let app = Router::new().route(
        confab_proto::WS_PATH,
        get(|ws: WebSocketUpgrade| async move {
            // The same read buffer as confab's gateway: the floor must be comparable.
            ws.read_buffer_size(8 * 1024).on_upgrade(serve)
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    eprintln!("echo floor on ws://127.0.0.1:{}/v1/ws", args.port);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn serve(mut socket: WebSocket) {
    let hello = ServerFrame::Hello {
        uid: "echo".into(),
        resumed: false,
        last_seq: 0,
        node: "echo".into(),
    };
    if socket.send(Message::text(hello.to_json())).await.is_err() {
        return;
    }
    let mut seq = 0u64;
    while let Some(Ok(message)) = socket.recv().await {
        let Message::Text(text) = message else {
            continue;
        };
        let answers = match ClientFrame::parse(text.as_str()) {
            Ok(ClientFrame::Say { id, text }) => {
                seq += 3;
                vec![
                    ServerFrame::Ack {
                        id: id.clone(),
                        seq: seq - 2,
                    },
                    ServerFrame::Reply {
                        id,
                        seq,
                        text,
                        intent: "echo".into(),
                        slots: BTreeMap::new(),
                        policy: "echo".into(),
                    },
                ]
            }
            Ok(ClientFrame::Ping) => vec![ServerFrame::Pong],
            Ok(ClientFrame::Resume { .. }) | Err(_) => Vec::new(),
        };
        for answer in answers {
            if socket.send(Message::text(answer.to_json())).await.is_err() {
                return;
            }
        }
    }
}
