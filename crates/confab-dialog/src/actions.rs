//! The builtin actions' results. Pure: each result is a function of the
//! action's idempotency key and arguments, so an action run again under the
//! same key (after a crash, a move or a retry) answers the same.
//!
//! - `order_status`: an order's state, from its number;
//! - `lottery_draw`: a prize, drawn from the key.
//!
//! Side effects that leave confab (paying a prize for real) are `http` actions:
//! the runtime posts them with the key in `Idempotency-Key`.

use confab_core::session::Slots;

/// The builtin actions' names.
pub const BUILTINS: &[&str] = &["order_status", "lottery_draw"];

/// Prizes and their weights out of 100.
const PRIZES: &[(&str, u32)] = &[
    ("10 元优惠券", 50),
    ("20 元优惠券", 30),
    ("免运费券", 15),
    ("一双运动袜", 5),
];

/// Runs a builtin: its result, or why it failed (a failure is not retried:
/// the same key gives the same answer).
pub fn run_builtin(builtin: &str, key: &str, args: &Slots) -> Result<Slots, String> {
    match builtin {
        "order_status" => {
            let order = args
                .get("order_no")
                .ok_or("order_status needs the order_no argument")?;
            let states = [
                ("已发货，正在运输中", "预计 2 天内送达"),
                ("已签收", "感谢您的购买"),
                ("正在打包", "预计明天发货"),
            ];
            let (state, eta) = states[pick(order.to_uppercase().as_bytes(), states.len())];
            Ok([
                ("state".to_owned(), state.to_owned()),
                ("eta".to_owned(), eta.to_owned()),
            ]
            .into())
        }
        "lottery_draw" => {
            let total: u32 = PRIZES.iter().map(|(_, w)| w).sum();
            let mut roll = crc32fast::hash(key.as_bytes()) % total;
            let prize = PRIZES
                .iter()
                .find(|(_, weight)| {
                    if roll < *weight {
                        true
                    } else {
                        roll -= weight;
                        false
                    }
                })
                .map_or(PRIZES[0].0, |(name, _)| name);
            Ok([("prize".to_owned(), prize.to_owned())].into())
        }
        other => Err(format!("unknown builtin action {other}")),
    }
}

fn pick(bytes: &[u8], n: usize) -> usize {
    usize::try_from(crc32fast::hash(bytes)).unwrap_or(0) % n
}

/// The idempotency key of an action: the uid and the seq of its request.
pub fn idempotency_key(uid: &str, requested_seq: u64) -> String {
    format!("{uid}:{requested_seq}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_draws_the_same_prize_and_keys_spread_over_prizes() {
        let args = Slots::new();
        let once = run_builtin("lottery_draw", "alice:3", &args).unwrap();
        assert_eq!(run_builtin("lottery_draw", "alice:3", &args).unwrap(), once);
        let distinct: std::collections::BTreeSet<String> = (0..200)
            .map(|i| {
                run_builtin("lottery_draw", &format!("u{i}:3"), &args).unwrap()["prize"].clone()
            })
            .collect();
        assert!(distinct.len() >= 3, "{distinct:?}");
    }

    #[test]
    fn an_order_lookup_needs_its_number() {
        let err = run_builtin("order_status", "k", &Slots::new()).unwrap_err();
        assert!(err.contains("order_no"));
        let args: Slots = [("order_no".to_owned(), "SO20261124".to_owned())].into();
        assert!(
            run_builtin("order_status", "k", &args)
                .unwrap()
                .contains_key("state")
        );
        assert!(run_builtin("nope", "k", &args).is_err());
    }
}
