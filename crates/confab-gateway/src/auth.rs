//! Token checking ([`confab_auth`]), and the background fetch of
//! `auth.jwks_url`, which needs the node's HTTP client.

pub use confab_auth::*;

use std::time::Duration;
use tracing::warn;

/// Follows the authenticator's JWKS file and URL until it is dropped: the file
/// is re-read within `poll` of a change; the URL is fetched now and then every
/// `refresh` (https only, at most [`JWKS_BYTES_MAX`] bytes), never while a
/// request waits. A fetch or document that fails keeps the keys before it.
pub fn follow_jwks(
    auth: &Authenticator,
    client: reqwest::Client,
    poll: Duration,
    refresh: Duration,
) {
    auth.follow_jwks_file(poll);
    let Some(url) = auth.jwks_url().map(str::to_owned) else {
        return;
    };
    let updater = auth.jwks_updater();
    tokio::spawn(async move {
        while updater.is_live() {
            match fetch(&client, &url).await {
                Ok(document) => {
                    if let Err(e) = updater.replace(&document, "url") {
                        warn!(url, error = %e, "jwks url document refused; keeping the keys before it");
                    }
                }
                Err(e) => {
                    warn!(url, error = %e, "jwks url not fetched; keeping the keys before it")
                }
            }
            tokio::time::sleep(refresh).await;
        }
    });
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if bytes.len() + chunk.len() > JWKS_BYTES_MAX {
            return Err(format!("document over the {JWKS_BYTES_MAX}-byte limit"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
