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
    /// Lifetime: a number with s, m, h or d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// The HS256 secret (default: CONFAB_AUTH__JWT_SECRET, then the data dir's dev secret).
    #[arg(long, env = "CONFAB_AUTH__JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The data dir whose dev secret to use.
    #[arg(long, default_value = "./confab-data")]
    data_dir: PathBuf,
}

/// Parses `90s`, `30m`, `1h`, `2d`.
pub(crate) fn parse_ttl(ttl: &str) -> anyhow::Result<Duration> {
    let ttl = ttl.trim();
    let split = ttl.find(|c: char| !c.is_ascii_digit()).unwrap_or(ttl.len());
    let (number, unit) = ttl.split_at(split);
    let number: u64 = number
        .parse()
        .with_context(|| format!("ttl {ttl:?}: expected a number then s, m, h or d"))?;
    let seconds = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => anyhow::bail!("ttl {ttl:?}: unknown unit {other:?}, use s, m, h or d"),
    };
    Ok(Duration::from_secs(number * seconds))
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
    let secret = secrets::jwt_secret(args.jwt_secret.as_deref().unwrap_or(""), &args.data_dir)?;
    let token = sign(&secret, &args.uid, &args.scope, parse_ttl(&args.ttl)?)?;
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
