//! The wire types of confab's WebSocket protocol, v1.
//!
//! Serde only, no I/O: the gateway, `confab-bench`, the tests and the simulator's
//! clients share these types, so the protocol cannot drift between them.
//! `docs/protocol.md` describes the protocol for people.

pub mod admin;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The WebSocket endpoint's path.
pub const WS_PATH: &str = "/v1/ws";

/// Close code: the token expired during the session.
pub const CLOSE_TOKEN_EXPIRED: u16 = 1008;
/// Close code: a frame was over the size limit.
pub const CLOSE_TOO_LARGE: u16 = 1009;
/// Close code: the node is overloaded or draining; reconnect (any node serves).
pub const CLOSE_OVERLOADED: u16 = 1013;

/// A frame from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// One user turn.
    Say {
        /// The client's message id, unique per uid.
        id: String,
        /// What the user said.
        text: String,
    },
    /// Send every reply with a seq above `after_seq`.
    Resume {
        /// The seq of the last reply the client processed.
        after_seq: u64,
    },
    /// Liveness check; answered with `pong`.
    Ping,
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame of every connection.
    Hello {
        /// The authenticated user.
        uid: String,
        /// Whether the session already had recorded turns.
        resumed: bool,
        /// The highest seq the session has recorded.
        last_seq: u64,
        /// The node that owns the session.
        node: String,
    },
    /// The turn is durably recorded.
    Ack {
        /// The client's message id.
        id: String,
        /// The seq of the turn's first event.
        seq: u64,
    },
    /// The answer to a turn.
    Reply {
        /// The client's message id.
        id: String,
        /// The seq of the reply's event (above the ack's seq).
        seq: u64,
        /// The reply text.
        text: String,
        /// The intent answered.
        intent: String,
        /// The session's slots after the turn; sensitive ones masked.
        slots: BTreeMap<String, String>,
        /// The policy version that answered.
        policy: String,
    },
    /// Something went wrong with a frame or a turn.
    Error {
        /// The message id concerned, when there is one.
        id: Option<String>,
        /// What kind of error.
        code: ErrorCode,
        /// What happened and what to do.
        message: String,
    },
    /// The answer to `ping`.
    Pong,
}

/// The error codes of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a valid v1 frame; nothing was recorded.
    BadFrame,
    /// A field is over its size limit; nothing was recorded.
    TooLarge,
    /// Too many turns from this uid; retry later.
    RateLimited,
    /// The node has too much work in flight; retry (with backoff).
    Overloaded,
    /// Not allowed.
    Forbidden,
    /// The input filter refused the text.
    RejectedInput,
    /// The durable tier cannot be reached: the turn was not recorded, retry.
    Unavailable,
    /// A bug; the turn's outcome is unknown, retry with the same id.
    Internal,
}

impl ServerFrame {
    /// Renders the frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

/// Why a client frame was refused, with the message id when one could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The `id` field, if the frame had a string one.
    pub id: Option<String>,
    /// What is wrong, for the client.
    pub message: String,
}

impl ClientFrame {
    /// Parses a text frame, explaining precisely what is wrong when it fails.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| FrameError {
            id: None,
            message: format!("frame is not json: {e}"),
        })?;
        let id = value.get("id").and_then(|v| v.as_str()).map(str::to_owned);
        let Some(object) = value.as_object() else {
            return Err(FrameError {
                id,
                message: "frame must be a json object with a \"type\"".into(),
            });
        };
        match object.get("type") {
            None => {
                return Err(FrameError {
                    id,
                    message: "frame has no \"type\" field".into(),
                });
            }
            Some(serde_json::Value::String(kind)) if !KNOWN_TYPES.contains(&kind.as_str()) => {
                return Err(FrameError {
                    id,
                    message: format!(
                        "unknown frame type {kind:?}: expected one of say, resume, ping"
                    ),
                });
            }
            Some(serde_json::Value::String(_)) => {}
            Some(_) => {
                return Err(FrameError {
                    id,
                    message: "\"type\" must be a string".into(),
                });
            }
        }
        serde_json::from_value(value).map_err(|e| FrameError {
            id,
            message: format!("invalid frame: {e}"),
        })
    }
}

const KNOWN_TYPES: &[&str] = &["say", "resume", "ping"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"say","id":"m-1","text":"hi"}"#),
            Ok(ClientFrame::Say {
                id: "m-1".into(),
                text: "hi".into()
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"resume","after_seq":3}"#),
            Ok(ClientFrame::Resume { after_seq: 3 })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping)
        );
    }

    #[test]
    fn bad_frames_say_what_is_wrong() {
        let cases = [
            ("hello", "not json"),
            ("[1]", "json object"),
            (r#"{"id":"m-1"}"#, "no \"type\""),
            (r#"{"type":"shout","id":"m-1"}"#, "unknown frame type"),
            (r#"{"type":7}"#, "must be a string"),
            (r#"{"type":"say","id":"m-1"}"#, "missing field `text`"),
            (r#"{"type":"say","id":"m-1","text":5}"#, "invalid type"),
            (r#"{"type":"resume","after_seq":-1}"#, "invalid value"),
        ];
        for (frame, expected) in cases {
            let err = ClientFrame::parse(frame).unwrap_err();
            assert!(
                err.message.contains(expected),
                "{frame}: {:?} lacks {expected:?}",
                err.message
            );
        }
        let err = ClientFrame::parse(r#"{"type":"say","id":"m-9"}"#).unwrap_err();
        assert_eq!(err.id.as_deref(), Some("m-9"));
    }

    #[test]
    fn server_frames_render_as_the_contract_shows() {
        let frame = ServerFrame::Error {
            id: None,
            code: ErrorCode::BadFrame,
            message: "x".into(),
        };
        assert_eq!(
            frame.to_json(),
            r#"{"type":"error","id":null,"code":"bad_frame","message":"x"}"#
        );
        assert_eq!(ServerFrame::Pong.to_json(), r#"{"type":"pong"}"#);
        let ack = ServerFrame::Ack {
            id: "m-1".into(),
            seq: 4,
        };
        assert_eq!(ack.to_json(), r#"{"type":"ack","id":"m-1","seq":4}"#);
    }

    proptest::proptest! {
        /// Whatever a client sends, parsing answers with a frame or an error: it
        /// never panics.
        #[test]
        fn parsing_never_panics(text in ".{0,200}") {
            let _ = ClientFrame::parse(&text);
        }

        #[test]
        fn json_objects_of_any_shape_are_answered(
            kind in proptest::option::of("[a-z]{0,8}"),
            id in proptest::option::of(".{0,20}"),
            seq in proptest::option::of(proptest::num::i64::ANY),
        ) {
            let mut object = serde_json::Map::new();
            if let Some(kind) = kind { object.insert("type".into(), kind.into()); }
            if let Some(id) = id { object.insert("id".into(), id.into()); }
            if let Some(seq) = seq { object.insert("after_seq".into(), seq.into()); }
            let _ = ClientFrame::parse(&serde_json::Value::Object(object).to_string());
        }
    }
}
