//! `confab token`: a signed HS256 token, with the node's secret rules.

use crate::secrets;
use anyhow::Context;
use confab_gateway::auth::{Authenticator, Claims};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(clap::Args)]
pub(crate) struct TokenArgs {
    /// The user id (the token's `sub`).
    #[arg(long)]
    uid: String,
    /// Comma-separated scopes.
    #[arg(long, default_value = "chat")]
    scope: String,
    /// Lifetime, as people write it: 90s, 30m, 1h, 2d.
    #[arg(long, default_value = "1h", value_parser = parse_positive_duration)]
    ttl: Duration,
    /// The HS256 secret (default: CONFAB_AUTH__JWT_SECRET, then the data dir's dev secret).
    #[arg(long, env = "CONFAB_AUTH__JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// A file holding the HS256 secret (a mounted Kubernetes Secret, say), as
    /// the node reads `CONFAB_AUTH__JWT_SECRET_FILE`.
    /// `--jwt-secret` wins when both are given.
    #[arg(long, env = "CONFAB_AUTH__JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// The data dir whose dev secret to use.
    #[arg(long, default_value = "./confab-data")]
    data_dir: PathBuf,
}

/// Parses a duration flag (`--ttl`, `up --restart-window`) as people write
/// it, with the humantime crate as every confab binary does: `90s`, `30m`,
/// `1h`, `2d`, `1h30m`. A bare number is seconds, as these flags took it
/// before.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!(
            "{text:?} is not a duration ({e}): write it as 90s, 30m, 1h or 2d (use s, m, h or d)"
        )
    })
}

/// [`parse_duration`], at least a second: a token that expires as it is made,
/// or a restart window of nothing, is a mistake to say, not to carry out.
pub(crate) fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) {
        return Err(format!("{text:?} is too short: give at least 1s"));
    }
    Ok(duration)
}

/// Signs a token for `uid` with these scopes.
pub(crate) fn sign(secret: &str, uid: &str, scopes: &str, ttl: Duration) -> anyhow::Result<String> {
    confab_core::Uid::new(uid).with_context(|| format!("uid {uid:?}"))?;
    let auth = Authenticator::new(secret.as_bytes())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    Ok(auth.issue(&Claims {
        sub: uid.to_owned(),
        scope: scopes
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        exp: now + ttl.as_secs(),
        nbf: None,
    }))
}

pub(crate) fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let from_file = match &args.jwt_secret_file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| anyhow::anyhow!("--jwt-secret-file {}: {e}", path.display()))?,
        None => String::new(),
    };
    let configured = args.jwt_secret.as_deref().unwrap_or(&from_file);
    let secret = secrets::jwt_secret(configured, &args.data_dir)?;
    let token = sign(&secret, &args.uid, &args.scope, args.ttl)?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_before_and_as_people_write_them() {
        // What the hand-written parser took.
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        // And now what people also write.
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn bad_durations_say_how_to_write_one() {
        for bad in ["h", "5x", "", "-1s", "banana"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("use s, m, h or d"), "{bad}: {err}");
        }
    }
}
