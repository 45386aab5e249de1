//! The shoe-shop conversation: keyword and regex intents, slot extraction, and a
//! policy that asks for what is missing and answers with the slots it has.
//!
//! Intents: `greet`, `stock_query` (needs `size` and `colour`), `order_status`
//! (needs `order_no`), `callback` (needs `phone`), `thanks`, `inform` (only slot
//! values: it fills the task that is open) and `unknown`. Replies are in Chinese
//! when the user writes Chinese, in English otherwise.

use crate::{
    Decision, DialogContext, Nlu, Policy, PolicyReply, ReplyPolicy, TurnContext, Understanding,
    mask_value,
};
use confab_core::session::Slots;
use confab_core::session::{ActionOutcome, PendingAction, ReplyDecision, TurnDecision};
use regex::{Regex, RegexSet};

/// The version this policy names in replies.
pub const POLICY_VERSION: &str = "v1";

/// Task intents: the ones an `inform` can fill.
const TASKS: &[&str] = &["stock_query", "order_status", "callback"];

/// Sizes the shop sells; everything else is out of stock.
const SIZES_IN_STOCK: std::ops::RangeInclusive<u32> = 35..=45;

/// Keyword and regex NLU for the shoe shop.
pub struct ShoeShopNlu {
    /// Each intent and its confidence, in the order of `intent_patterns`.
    intents: Vec<(&'static str, f32)>,
    /// The intents' patterns, searched in one pass; the first that matches
    /// (in list order) wins.
    intent_patterns: RegexSet,
    size: Regex,
    order_no: Regex,
    phone: Regex,
    /// Each colour's name, in the order of `colour_patterns`.
    colours: Vec<&'static str>,
    /// The colours' patterns, searched in one pass; the first in list order wins.
    colour_patterns: RegexSet,
}

impl Default for ShoeShopNlu {
    fn default() -> Self {
        Self::new()
    }
}

impl ShoeShopNlu {
    /// Compiles the patterns.
    pub fn new() -> Self {
        let re = |pattern: &str| Regex::new(pattern).expect("built-in patterns compile");
        let set = |patterns: Vec<&str>| RegexSet::new(patterns).expect("built-in patterns compile");
        // First match wins: the more specific tasks come first.
        let intents = [
            (
                "order_status",
                0.9,
                r"(?i)订单|物流|快递|发货|到哪|\border\b|shipping|deliver|track",
            ),
            (
                "callback",
                0.9,
                r"(?i)电话|手机|联系我|回电|打给我|call me|call back|callback|\bphone\b",
            ),
            (
                "stock_query",
                0.9,
                r"(?i)有货|有没有|库存|还有|有吗|缺货|in stock|available|\bstock\b|do you have",
            ),
            ("greet", 0.95, r"(?i)^\s*(你好|您好|在吗|hi\b|hello|hey)"),
            ("thanks", 0.95, r"(?i)谢谢|多谢|再见|thank|\bbye\b"),
        ];
        let colours = [
            (r"黑色?|(?i)\bblack\b", "black"),
            (r"白色?|(?i)\bwhite\b", "white"),
            (r"红色?|(?i)\bred\b", "red"),
            (r"蓝色?|(?i)\bblue\b", "blue"),
            (r"灰色?|(?i)\bgr[ae]y\b", "grey"),
        ];
        Self {
            intents: intents.iter().map(|(name, c, _)| (*name, *c)).collect(),
            intent_patterns: set(intents.iter().map(|(_, _, p)| *p).collect()),
            size: re(r"(?i)(?:(\d{2}(?:\.5)?)\s*(?:码|号))|(?:\b(?:size|eu)\s*(\d{2}(?:\.5)?)\b)"),
            order_no: re(
                r"(?i)(?:订单号?|order\s*(?:no\.?|number|#)?)\s*[:：#]?\s*([A-Za-z]{0,4}\d[A-Za-z0-9-]{5,31})",
            ),
            phone: re(r"(?:^|[^0-9])(?:\+?86[- ]?)?(1[3-9]\d{9})(?:$|[^0-9])"),
            colours: colours.iter().map(|(_, name)| *name).collect(),
            colour_patterns: set(colours.iter().map(|(p, _)| *p).collect()),
        }
    }

    fn slots(&self, text: &str) -> Slots {
        let mut slots = Slots::new();
        if let Some(caps) = self.size.captures(text) {
            let size = caps.get(1).or_else(|| caps.get(2)).map(|m| m.as_str());
            if let Some(size) = size.filter(|s| plausible_size(s)) {
                slots.insert("size".into(), size.to_owned());
            }
        }
        if let Some(first) = self.colour_patterns.matches(text).iter().next() {
            slots.insert("colour".into(), self.colours[first].to_owned());
        }
        if let Some(caps) = self.order_no.captures(text) {
            slots.insert("order_no".into(), caps[1].to_uppercase());
        }
        if let Some(caps) = self.phone.captures(text) {
            slots.insert("phone".into(), caps[1].to_owned());
        }
        slots
    }
}

fn plausible_size(size: &str) -> bool {
    size.split('.')
        .next()
        .and_then(|whole| whole.parse::<u32>().ok())
        .is_some_and(|n| (20..=50).contains(&n))
}

impl Nlu for ShoeShopNlu {
    fn understand(&self, text: &str) -> Understanding {
        let slots = self.slots(text);
        let first = self.intent_patterns.matches(text).iter().next();
        let (intent, confidence) = match first.map(|i| self.intents[i]) {
            Some((intent, confidence)) => (intent, confidence),
            None if !slots.is_empty() => ("inform", 0.8),
            None => ("unknown", 0.2),
        };
        Understanding {
            intent: intent.to_owned(),
            confidence,
            slots,
            refused: Slots::new(),
        }
    }
}

/// The shoe shop's policy.
pub struct ShoeShopPolicy;

#[derive(Clone, Copy)]
enum Lang {
    Zh,
    En,
}

fn lang_of(text: &str) -> Lang {
    if text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) {
        Lang::Zh
    } else {
        Lang::En
    }
}

fn colour_name(lang: Lang, colour: &str) -> String {
    let zh = match colour {
        "black" => "黑色",
        "white" => "白色",
        "red" => "红色",
        "blue" => "蓝色",
        "grey" => "灰色",
        other => other,
    };
    match lang {
        Lang::Zh => zh.to_owned(),
        Lang::En => colour.to_owned(),
    }
}

impl ShoeShopPolicy {
    fn task<'a>(ctx: DialogContext<'a>, understanding: &'a Understanding) -> &'a str {
        let intent = understanding.intent.as_str();
        if intent != "inform" {
            return intent;
        }
        match ctx.last_intent {
            Some(last) if TASKS.contains(&last) => last,
            // Slot values with no open task: a size or a colour is a stock question.
            _ if understanding.slots.contains_key("size")
                || understanding.slots.contains_key("colour") =>
            {
                "stock_query"
            }
            _ if understanding.slots.contains_key("order_no") => "order_status",
            _ if understanding.slots.contains_key("phone") => "callback",
            _ => "inform",
        }
    }

    fn stock(lang: Lang, slots: &Slots) -> String {
        let (size, colour) = (slots.get("size"), slots.get("colour"));
        match (size, colour, lang) {
            (None, _, Lang::Zh) => "请问您穿多大码？（例如：39码）".into(),
            (None, _, Lang::En) => "Which size do you wear? (for example: size 39)".into(),
            (Some(size), None, Lang::Zh) => format!("好的，{size}码。请问您想要什么颜色？"),
            (Some(size), None, Lang::En) => {
                format!("Size {size}, noted. Which colour would you like?")
            }
            (Some(size), Some(colour), lang) => {
                let colour = colour_name(lang, colour);
                let in_stock = size
                    .split('.')
                    .next()
                    .and_then(|s| s.parse::<u32>().ok())
                    .is_some_and(|n| SIZES_IN_STOCK.contains(&n));
                match (in_stock, lang) {
                    (true, Lang::Zh) => {
                        format!("{colour} {size}码 有货，今天下单今天发货。")
                    }
                    (true, Lang::En) => format!(
                        "The {colour} pair in size {size} is in stock; order today and it ships today."
                    ),
                    (false, Lang::Zh) => {
                        format!("抱歉，{colour} {size}码 暂时缺货，我们有 35 到 45 码。")
                    }
                    (false, Lang::En) => format!(
                        "Sorry, the {colour} pair in size {size} is out of stock; we carry sizes 35 to 45."
                    ),
                }
            }
        }
    }

    fn order(lang: Lang, slots: &Slots) -> String {
        match (slots.get("order_no"), lang) {
            (None, Lang::Zh) => "请提供您的订单号（例如：订单号 SO12345678）。".into(),
            (None, Lang::En) => "What is your order number? (for example: order SO12345678)".into(),
            (Some(no), Lang::Zh) => format!("订单 {no} 已发货，预计 2 天内送达。"),
            (Some(no), Lang::En) => {
                format!("Order {no} has shipped and should arrive within 2 days.")
            }
        }
    }

    fn callback(lang: Lang, slots: &Slots) -> String {
        match (slots.get("phone"), lang) {
            (None, Lang::Zh) => "请留下您的手机号，我们会尽快联系您。".into(),
            (None, Lang::En) => "Please leave your phone number and we will call you back.".into(),
            (Some(phone), Lang::Zh) => {
                format!("好的，我们会尽快致电 {}。", mask_value("phone", phone))
            }
            (Some(phone), Lang::En) => format!(
                "Thanks, we will call you at {} shortly.",
                mask_value("phone", phone)
            ),
        }
    }
}

impl ReplyPolicy for ShoeShopPolicy {
    fn version(&self) -> &str {
        POLICY_VERSION
    }

    fn decide(
        &self,
        ctx: DialogContext<'_>,
        text: &str,
        understanding: &Understanding,
        slots: &Slots,
    ) -> PolicyReply {
        let task = Self::task(ctx, understanding);
        let lang = lang_of(text);
        let text = match (task, lang) {
            ("stock_query", lang) => Self::stock(lang, slots),
            ("order_status", lang) => Self::order(lang, slots),
            ("callback", lang) => Self::callback(lang, slots),
            ("greet", Lang::Zh) => {
                "您好！我是鞋店客服，可以帮您查库存、查订单，或者安排回电。".into()
            }
            ("greet", Lang::En) => {
                "Hello! I can check stock, track an order, or arrange a call back.".into()
            }
            ("thanks", Lang::Zh) => "不客气，祝您购物愉快！".into(),
            ("thanks", Lang::En) => "You're welcome, happy shopping!".into(),
            (_, Lang::Zh) => {
                "抱歉，我没太明白。您可以问我：39码的黑色有货吗？订单 SO12345678 到哪了？".into()
            }
            (_, Lang::En) => "Sorry, I did not catch that. Try: do you have black in size 39? \
                              Or: where is order SO12345678?"
                .into(),
        };
        PolicyReply {
            intent: task.to_owned(),
            text,
        }
    }
}

/// The shoe shop as a [`Policy`]: its NLU, then its reply. It calls no action.
pub struct ShoeShop {
    nlu: ShoeShopNlu,
}

impl Default for ShoeShop {
    fn default() -> Self {
        Self::new()
    }
}

impl ShoeShop {
    /// Compiles the patterns.
    pub fn new() -> Self {
        Self {
            nlu: ShoeShopNlu::new(),
        }
    }
}

impl Policy for ShoeShop {
    fn version(&self) -> &str {
        POLICY_VERSION
    }

    fn understand(&self, _ctx: TurnContext<'_>, text: &str) -> Understanding {
        self.nlu.understand(text)
    }

    fn decide(&self, ctx: TurnContext<'_>, text: &str, understanding: &Understanding) -> Decision {
        let mut slots = ctx.state.slots().clone();
        slots.extend(understanding.slots.clone());
        let dialog = DialogContext {
            slots: ctx.state.slots(),
            last_intent: ctx.state.last_intent(),
        };
        let reply = ShoeShopPolicy.decide(dialog, text, understanding, &slots);
        Decision::Reply(TurnDecision {
            intent: reply.intent,
            confidence: understanding.confidence,
            slots_filled: understanding.slots.clone(),
            slots_cleared: Vec::new(),
            reply_text: reply.text,
            policy: POLICY_VERSION.to_owned(),
            dialog: Slots::new(),
        })
    }

    fn resume(
        &self,
        _ctx: TurnContext<'_>,
        pending: &PendingAction,
        _outcome: &ActionOutcome,
    ) -> ReplyDecision {
        // Never reached: this policy calls no action. A log that says otherwise
        // gets a plain answer rather than a stuck turn.
        ReplyDecision {
            intent: pending.action.clone(),
            reply_text: "好的。".into(),
            policy: POLICY_VERSION.to_owned(),
            slots_cleared: Vec::new(),
            dialog: Slots::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ShoeShopNlu, ShoeShopPolicy};
    use crate::{BasicInputFilter, DialogContext, InputFilter, Nlu, ReplyPolicy};
    use confab_core::session::Slots;

    /// The filter, the NLU and the policy, as the pipeline runs them.
    fn run(ctx: DialogContext<'_>, text: &str) -> Option<(String, String, Slots)> {
        let text = BasicInputFilter.filter(text).ok()?;
        let understanding = ShoeShopNlu::new().understand(&text);
        let mut slots = ctx.slots.clone();
        slots.extend(understanding.slots.clone());
        let reply = ShoeShopPolicy.decide(ctx, &text, &understanding, &slots);
        Some((reply.intent, reply.text, understanding.slots))
    }

    /// Plays a conversation through the pipeline, carrying slots and intent the
    /// way the session does, and returns the replies.
    fn chat(lines: &[&str]) -> Vec<(String, String, Slots)> {
        let mut slots = Slots::new();
        let mut last_intent: Option<String> = None;
        let mut out = Vec::new();
        for line in lines {
            let ctx = DialogContext {
                slots: &slots,
                last_intent: last_intent.as_deref(),
            };
            let (intent, reply, filled) = run(ctx, line).unwrap();
            slots.extend(filled);
            last_intent = Some(intent.clone());
            out.push((intent, reply, slots.clone()));
        }
        out
    }

    #[test]
    fn a_stock_question_asks_for_the_missing_slots_then_answers_with_them() {
        let turns = chat(&["你好", "这款鞋有货吗？", "39码", "黑色"]);
        assert_eq!(turns[0].0, "greet");
        assert_eq!(turns[1].0, "stock_query");
        assert!(turns[1].1.contains("多大码"), "{}", turns[1].1);
        assert_eq!(turns[2].0, "stock_query", "an inform fills the open task");
        assert!(turns[2].1.contains("39码") && turns[2].1.contains("颜色"));
        assert_eq!(turns[3].1, "黑色 39码 有货，今天下单今天发货。");
        assert_eq!(turns[3].2.get("colour").map(String::as_str), Some("black"));
    }

    /// Intents and colours are searched as sets: the first in list order
    /// wins, wherever in the text each one matches.
    #[test]
    fn the_first_intent_and_colour_in_list_order_win() {
        let nlu = ShoeShopNlu::new();
        let got = |text: &str| {
            let u = nlu.understand(text);
            (u.intent, u.slots.get("colour").cloned())
        };
        assert_eq!(got("call me about my order"), ("order_status".into(), None));
        assert_eq!(got("thanks, do you have it?"), ("stock_query".into(), None));
        assert_eq!(got("hello, thank you"), ("greet".into(), None));
        assert_eq!(
            got("grey or white or black?"),
            ("inform".into(), Some("black".into()))
        );
        assert_eq!(got("红色还是蓝色"), ("inform".into(), Some("red".into())));
        assert_eq!(got("blackberry"), ("unknown".into(), None));
    }

    #[test]
    fn sizes_outside_the_range_are_out_of_stock() {
        let turns = chat(&["do you have white in size 47?"]);
        assert_eq!(turns[0].0, "stock_query");
        assert!(turns[0].1.contains("out of stock"), "{}", turns[0].1);
    }

    #[test]
    fn an_order_number_is_extracted_and_used() {
        let turns = chat(&["我的订单到哪了", "订单号 so20261124"]);
        assert!(turns[0].1.contains("订单号"));
        assert_eq!(
            turns[1].2.get("order_no").map(String::as_str),
            Some("SO20261124")
        );
        assert!(turns[1].1.contains("SO20261124"));
    }

    #[test]
    fn a_phone_number_is_used_masked() {
        let turns = chat(&["请给我回电", "13812345678"]);
        assert_eq!(turns[1].0, "callback");
        assert_eq!(
            turns[1].2.get("phone").map(String::as_str),
            Some("13812345678")
        );
        assert!(turns[1].1.contains("138****5678"));
        assert!(!turns[1].1.contains("13812345678"));
    }

    #[test]
    fn unknown_text_gets_help() {
        let turns = chat(&["what is the meaning of life"]);
        assert_eq!(turns[0].0, "unknown");
        assert!(turns[0].1.contains("order SO12345678"));
    }

    proptest::proptest! {
        /// Any text, in any conversation state, gets a reply or a refusal, and a
        /// phone number it contains never appears unmasked in the reply.
        #[test]
        fn replies_never_leak_a_phone_number(
            before in "[a-z0-9 码黑色订单有货吗电话]{0,20}",
            digits in "1[3-9][0-9]{9}",
            after in "[a-z0-9 码黑色订单有货吗电话]{0,20}",
            last in proptest::sample::select(vec!["callback", "stock_query", "order_status", "greet"]),
        ) {
            let slots = Slots::new();
            let ctx = DialogContext { slots: &slots, last_intent: Some(last) };
            let text = format!("{before} 电话 {digits} {after}");
            if let Some((_, reply, _)) = run(ctx, &text) {
                proptest::prop_assert!(!reply.contains(&digits), "{}", reply);
            }
        }
    }
}
