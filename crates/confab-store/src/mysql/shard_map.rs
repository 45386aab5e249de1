//! Which MySQL server holds each of the 64 event shards.
//!
//! The model is Vitess's keyspace ranges: the map is a list of inclusive shard
//! ranges, each naming the server (a `mysql://` URL) that holds their event
//! tables, their sessions' fences and their snapshots. Shards no range names
//! live on the control server (`store.mysql_url`), so the empty map is today's
//! single server.
//!
//! The map starts as the config's `[[store.mysql_shards]]`. Once a shard has
//! been moved (`confab shards move`), the map lives in the control store as the
//! setting [`SHARD_MAP_SETTING`], changed by compare-and-set, and wins over the
//! config: a node that meets a moved shard reloads it from there.

use serde::{Deserialize, Serialize};

use super::SHARDS;

/// The control store's setting that holds the map once a shard has moved.
pub const SHARD_MAP_SETTING: &str = "store.shard_map";

/// Shards `from..=to` on the server at `url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRange {
    /// The first shard, 0 to 63.
    pub from: u32,
    /// The last shard, inclusive, `from` to 63.
    pub to: u32,
    /// The server, `mysql://user:password@host:port/database`.
    pub url: String,
}

/// Where every shard lives: one server per shard, normalized to the fewest
/// ranges in shard order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    /// The server of each shard, by shard number.
    homes: Vec<String>,
}

/// How the map is kept in the control store.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredMap {
    shards: Vec<ShardRange>,
}

impl ShardMap {
    /// The map with `ranges` on their servers and every other shard on
    /// `default_url` (the control server).
    ///
    /// Refuses a range outside 0..=63, one whose `from` is above its `to`, two
    /// ranges that share a shard, and a URL that is not `mysql://`.
    pub fn new(default_url: &str, ranges: &[ShardRange]) -> Result<Self, String> {
        check_url(default_url)?;
        let mut homes: Vec<Option<&str>> = vec![None; SHARDS as usize];
        for range in ranges {
            if range.from > range.to || range.to >= SHARDS {
                return Err(format!(
                    "store.mysql_shards: from = {}, to = {} is not a range of shards within 0..={} (from <= to)",
                    range.from,
                    range.to,
                    SHARDS - 1
                ));
            }
            check_url(&range.url)?;
            for shard in range.from..=range.to {
                let home = &mut homes[shard as usize];
                if home.is_some() {
                    return Err(format!(
                        "store.mysql_shards: shard {shard} is named by two ranges; each shard has one server"
                    ));
                }
                *home = Some(&range.url);
            }
        }
        Ok(Self {
            homes: homes
                .into_iter()
                .map(|home| home.unwrap_or(default_url).to_owned())
                .collect(),
        })
    }

    /// The server of `shard` (0..64).
    pub fn url_of(&self, shard: u32) -> &str {
        &self.homes[shard as usize]
    }

    /// The distinct servers, in the order of their first shard.
    pub fn servers(&self) -> Vec<&str> {
        let mut servers: Vec<&str> = Vec::new();
        for url in &self.homes {
            if !servers.contains(&url.as_str()) {
                servers.push(url);
            }
        }
        servers
    }

    /// The shards on `url`, in order.
    pub fn shards_on(&self, url: &str) -> Vec<u32> {
        (0..SHARDS).filter(|s| self.url_of(*s) == url).collect()
    }

    /// The map as the fewest ranges, in shard order.
    pub fn ranges(&self) -> Vec<ShardRange> {
        let mut ranges: Vec<ShardRange> = Vec::new();
        for (shard, url) in (0..SHARDS).zip(&self.homes) {
            match ranges.last_mut() {
                Some(last) if &last.url == url && last.to + 1 == shard => last.to = shard,
                _ => ranges.push(ShardRange {
                    from: shard,
                    to: shard,
                    url: url.clone(),
                }),
            }
        }
        ranges
    }

    /// This map with `shard` on `url`.
    pub fn with_shard_on(&self, shard: u32, url: &str) -> Result<Self, String> {
        check_url(url)?;
        if shard >= SHARDS {
            return Err(format!(
                "shard {shard} does not exist: shards are 0..={}",
                SHARDS - 1
            ));
        }
        let mut moved = self.clone();
        url.clone_into(&mut moved.homes[shard as usize]);
        Ok(moved)
    }

    /// The setting's body: every shard's range, explicitly.
    pub fn to_setting(&self) -> String {
        serde_json::to_string(&StoredMap {
            shards: self.ranges(),
        })
        .expect("a map always serializes")
    }

    /// The map a setting's body describes; it must name all 64 shards.
    pub fn from_setting(body: &str) -> Result<Self, String> {
        let stored: StoredMap = serde_json::from_str(body)
            .map_err(|e| format!("setting {SHARD_MAP_SETTING} does not decode: {e}"))?;
        let covered: u32 = stored
            .shards
            .iter()
            .map(|r| r.to.saturating_sub(r.from) + 1)
            .sum();
        let first = stored
            .shards
            .first()
            .ok_or_else(|| format!("setting {SHARD_MAP_SETTING} names no shards"))?;
        let map = Self::new(&first.url, &stored.shards)?;
        if covered != SHARDS {
            return Err(format!(
                "setting {SHARD_MAP_SETTING} names {covered} shards; it must name all {SHARDS}"
            ));
        }
        Ok(map)
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("mysql://") {
        Ok(())
    } else {
        Err(format!(
            "a shard server's url must start with mysql://, not {:?}",
            crate::mysql::redacted(url)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "mysql://root@a:3306/confab";
    const B: &str = "mysql://root@b:3306/confab";

    fn range(from: u32, to: u32, url: &str) -> ShardRange {
        ShardRange {
            from,
            to,
            url: url.into(),
        }
    }

    #[test]
    fn unnamed_shards_stay_on_the_control_server() {
        let map = ShardMap::new(A, &[range(32, 47, B)]).unwrap();
        assert_eq!(map.url_of(0), A);
        assert_eq!(map.url_of(31), A);
        assert_eq!(map.url_of(32), B);
        assert_eq!(map.url_of(47), B);
        assert_eq!(map.url_of(48), A);
        assert_eq!(map.servers(), vec![A, B]);
        assert_eq!(map.shards_on(B), (32..=47).collect::<Vec<_>>());
        assert_eq!(
            map.ranges(),
            vec![range(0, 31, A), range(32, 47, B), range(48, 63, A)]
        );
    }

    #[test]
    fn the_empty_map_is_one_server() {
        let map = ShardMap::new(A, &[]).unwrap();
        assert_eq!(map.servers(), vec![A]);
        assert_eq!(map.ranges(), vec![range(0, 63, A)]);
    }

    #[test]
    fn bad_ranges_are_refused_with_what_is_wrong() {
        let err = ShardMap::new(A, &[range(10, 5, B)]).unwrap_err();
        assert!(err.contains("from = 10, to = 5"), "{err}");
        let err = ShardMap::new(A, &[range(60, 64, B)]).unwrap_err();
        assert!(err.contains("within 0..=63"), "{err}");
        let err = ShardMap::new(A, &[range(0, 9, B), range(9, 12, A)]).unwrap_err();
        assert!(err.contains("shard 9 is named by two ranges"), "{err}");
        let err = ShardMap::new(A, &[range(0, 9, "postgres://x")]).unwrap_err();
        assert!(err.contains("mysql://"), "{err}");
        let err = ShardMap::new("mysql:/oops", &[]).unwrap_err();
        assert!(err.contains("mysql://"), "{err}");
    }

    #[test]
    fn a_moved_shard_round_trips_through_the_setting() {
        let map = ShardMap::new(A, &[range(32, 63, B)]).unwrap();
        let moved = map.with_shard_on(5, B).unwrap();
        assert_eq!(moved.url_of(5), B);
        assert_eq!(moved.url_of(4), A);
        let back = ShardMap::from_setting(&moved.to_setting()).unwrap();
        assert_eq!(back, moved);
        assert!(map.with_shard_on(64, B).is_err());
    }

    #[test]
    fn a_setting_must_name_every_shard() {
        let body = r#"{"shards":[{"from":0,"to":31,"url":"mysql://a/x"}]}"#;
        let err = ShardMap::from_setting(body).unwrap_err();
        assert!(err.contains("names 32 shards"), "{err}");
        assert!(ShardMap::from_setting("{").is_err());
        assert!(ShardMap::from_setting(r#"{"shards":[]}"#).is_err());
    }
}
