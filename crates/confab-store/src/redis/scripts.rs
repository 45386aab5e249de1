//! The hot tier's Lua scripts: each runs on one session's two keys (one slot,
//! by their hash tag) or on the member table's one key, so that on a Redis
//! Cluster every script runs whole on one master.

use redis::{Cmd, Script};
use std::sync::LazyLock;

/// A Lua script and its source: a cluster node that lacks the script is sent
/// the source.
pub(super) struct Lua {
    pub(super) script: Script,
    pub(super) source: String,
}

impl Lua {
    fn new(source: String) -> Self {
        Self {
            script: Script::new(&source),
            source,
        }
    }

    pub(super) fn hash(&self) -> &str {
        self.script.get_hash()
    }
}

pub(super) static CLAIM: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(format!("{FENCE_LUA}{CLAIM_LUA}")));
pub(super) static APPEND: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(format!("{FENCE_LUA}{APPEND_LUA}")));
pub(super) static SNAPSHOT: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(format!("{FENCE_LUA}{SNAPSHOT_LUA}")));
pub(super) static FILL: LazyLock<Lua> = LazyLock::new(|| Lua::new(FILL_LUA.to_owned()));
pub(super) static READ: LazyLock<Lua> = LazyLock::new(|| Lua::new(READ_LUA.to_owned()));
pub(super) static MEMBERS_CAS: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(MEMBERS_CAS_LUA.to_owned()));

/// Every script the tier runs.
pub(super) fn scripts() -> [&'static Lua; 6] {
    [&CLAIM, &APPEND, &SNAPSHOT, &FILL, &READ, &MEMBERS_CAS]
}

/// The member table's compare-and-set. KEYS[1]: the table's hash. ARGV: the
/// expected version, the new version, the new body. Returns {1 applied or 0,
/// the stored body or ''}.
const MEMBERS_CAS_LUA: &str = r"
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if version ~= tonumber(ARGV[1]) then
  return {0, redis.call('HGET', KEYS[1], 'body') or ''}
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'body', ARGV[3])
return {1, ARGV[3]}
";

/// The start of every fenced script: compares the session's fence with the
/// writer's epoch (ARGV[1]), returns the fence if it is newer, and raises it
/// otherwise. KEYS[1] is the session's hash, KEYS[2] its event list.
const FENCE_LUA: &str = r"
local epoch = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '1')
if current > epoch then return {-1, current} end
if epoch > current then redis.call('HSET', KEYS[1], 'epoch', ARGV[1]) end
local function touch(ttl)
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
local function push(from)
  for i = from, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
end
";

/// ARGV: epoch, ttl.
const CLAIM_LUA: &str = r"
touch(ARGV[2])
return {1, epoch}
";

/// ARGV: epoch, first seq, ttl, cached events max, events...
/// Returns {1} appended, {0} not cached, {2} dropped, {-1, fence} fenced.
const APPEND_LUA: &str = r"
local first = tonumber(ARGV[2])
local n = #ARGV - 4
local last = redis.call('HGET', KEYS[1], 'last')
if not last and first == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'base', 0, 'last', 0)
  last = 0
end
local result = 0
if last then
  last = tonumber(last)
  local base = tonumber(redis.call('HGET', KEYS[1], 'base'))
  if first ~= last + 1 or last + n - base > tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[1], 'base', 'last', 'snap', 'snap_at', 'snap_epoch')
    redis.call('DEL', KEYS[2])
    result = 2
  else
    push(5)
    redis.call('HSET', KEYS[1], 'last', last + n)
    result = 1
  end
end
touch(ARGV[3])
return {result, 0}
";

/// ARGV: epoch, seq, ttl, snapshot bytes, at_ms. Returns {1} or {-1, fence}.
const SNAPSHOT_LUA: &str = r"
local seq = tonumber(ARGV[2])
local last = redis.call('HGET', KEYS[1], 'last')
local base = tonumber(redis.call('HGET', KEYS[1], 'base') or '0')
local function restart()
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'base', ARGV[2], 'last', ARGV[2])
end
if not last then
  restart()
elseif seq > tonumber(last) then
  restart()
elseif seq >= base then
  redis.call('LTRIM', KEYS[2], seq - base, -1)
  redis.call('HSET', KEYS[1], 'base', ARGV[2])
end
if not last or seq >= base then
  redis.call('HSET', KEYS[1], 'snap', ARGV[4], 'snap_at', ARGV[5], 'snap_epoch', ARGV[1])
end
touch(ARGV[3])
return {1, 0}
";

/// ARGV: epoch (unused: a fill copies durable data, it fences nobody), ttl,
/// base, snapshot bytes or '', snapshot at_ms, snapshot epoch, events...
const FILL_LUA: &str = r"
redis.call('DEL', KEYS[2])
local n = #ARGV - 6
redis.call('HSET', KEYS[1], 'base', ARGV[3], 'last', tonumber(ARGV[3]) + n)
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], 'snap', 'snap_at', 'snap_epoch')
else
  redis.call('HSET', KEYS[1], 'snap', ARGV[4], 'snap_at', ARGV[5], 'snap_epoch', ARGV[6])
end
for i = 7, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
";

/// ARGV: after (-1: from the cached snapshot), limit, ttl.
/// Returns nil when the cache does not cover `after` (or is broken: a list
/// shorter or longer than `last - base`, which also drops it), else
/// {base, last, snap, snap_at, snap_epoch, {events}}.
const READ_LUA: &str = r"
local v = redis.call('HMGET', KEYS[1], 'base', 'last', 'snap', 'snap_at', 'snap_epoch')
if not v[1] or not v[2] then return false end
local base = tonumber(v[1])
local last = tonumber(v[2])
if base > 0 and not v[3] then return false end
if redis.call('LLEN', KEYS[2]) ~= last - base then
  -- The list was lost (evicted, or expired apart from the hash): not a prefix.
  redis.call('HDEL', KEYS[1], 'base', 'last', 'snap', 'snap_at', 'snap_epoch')
  return false
end
local after = tonumber(ARGV[1])
if after < 0 then after = base end
if after < base then return false end
local events = {}
if after < last then
  events = redis.call('LRANGE', KEYS[2], after - base, after - base + tonumber(ARGV[2]) - 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {v[1], v[2], v[3] or '', v[4] or '0', v[5] or '0', events}
";

/// `EVALSHA sha numkeys keys... args...` as `EVAL source numkeys keys... args...`;
/// `None` if `call` is not a call of one of the tier's scripts.
pub(super) fn with_source(call: &Cmd) -> Option<Cmd> {
    let mut args = call.args_iter().filter_map(|arg| match arg {
        redis::Arg::Simple(bytes) => Some(bytes),
        _ => None, // a cursor: no script call has one
    });
    if args.next()? != b"EVALSHA" {
        return None;
    }
    let sha = args.next()?;
    let lua = scripts()
        .into_iter()
        .find(|lua| lua.hash().as_bytes() == sha)?;
    let mut eval = redis::cmd("EVAL");
    eval.arg(&lua.source);
    for arg in args {
        eval.arg(arg);
    }
    Some(eval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                _ => panic!("a cursor argument"),
            })
            .collect()
    }

    #[test]
    fn a_script_call_goes_again_with_the_scripts_source() {
        let mut call = redis::cmd("EVALSHA");
        call.arg(APPEND.hash())
            .arg(2)
            .arg("p:{u}:s")
            .arg("p:{u}:e")
            .arg(3)
            .arg(b"ev\0ent".as_slice());
        let eval = with_source(&call).expect("a call of a tier script");
        let eval = args(&eval);
        assert_eq!(eval[0], b"EVAL");
        assert_eq!(eval[1], APPEND.source.as_bytes());
        assert_eq!(args(&call)[2..], eval[2..], "keys and arguments unchanged");
        // Not a script of the tier, or not a script call: nothing to resend.
        assert!(with_source(redis::cmd("EVALSHA").arg("0123abcd").arg(0)).is_none());
        assert!(with_source(redis::cmd("GET").arg("p:{u}:s")).is_none());
    }
}
