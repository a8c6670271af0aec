//! A bounded fuzz run of what people and machines type at the cluster: tokens, CA pins,
//! TTLs and identity URIs. Nothing may panic, a real token always reads back, and an error
//! message quotes no more than a short excerpt of the input (it ends up in logs and
//! terminals).
//!
//! `cargo test` runs a few thousand cases; `scripts/fuzz.sh` runs many more:
//! `CLOUDOS_FUZZ_CASES=100000 cargo test -p cloudos-cluster --test parser_fuzz`.

use cloudos_cluster::identity::NodeIdentity;
use cloudos_cluster::token::parse_ttl;
use cloudos_cluster::{CaPin, ClusterCa, Token};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn cases() -> u32 {
    std::env::var("CLOUDOS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// The longest error message any of these parsers may give.
const MAX_MESSAGE: usize = 600;

/// Strings near the token format: real tokens with bytes flipped, cut or repeated.
fn near_token(pin: CaPin) -> impl Strategy<Value = String> {
    let real = Token::generate(pin).expect("token").to_string();
    (
        any::<prop::sample::Index>(),
        any::<char>(),
        0u8..4,
        1usize..5000,
    )
        .prop_map(move |(at, c, how, n)| {
            let mut s: Vec<char> = real.chars().collect();
            let i = at.index(s.len());
            match how {
                0 => s[i] = c,
                1 => s.truncate(i),
                2 => s.insert(i, c),
                _ => s.extend(std::iter::repeat_n(c, n)),
            }
            s.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(Config { cases: cases(), ..Config::default() })]

    #[test]
    fn any_text_is_a_token_or_a_short_error(s in "\\PC{0,200}|[a-z0-9_:]{0,120}") {
        if let Err(e) = s.parse::<Token>() {
            prop_assert!(e.to_string().chars().count() <= MAX_MESSAGE, "{e}");
        }
    }

    #[test]
    fn near_tokens_never_panic_and_errors_stay_short(s in near_token(ClusterCa::create("fuzz", time::OffsetDateTime::now_utc()).expect("ca").pin())) {
        match s.parse::<Token>() {
            Ok(t) => prop_assert_eq!(t.to_string().parse::<Token>().map(|u| u.to_string()).ok(), Some(t.to_string())),
            Err(e) => prop_assert!(e.to_string().chars().count() <= MAX_MESSAGE, "{e}"),
        }
    }

    #[test]
    fn pins_ttls_and_identity_uris_never_panic(s in "\\PC{0,120}", n in any::<u64>(), unit in "[smhdw]|[a-z]{0,3}") {
        let _ = CaPin::from_hex(&s);
        let _ = s.parse::<CaPin>();
        if let Err(e) = parse_ttl(&s) {
            prop_assert!(e.to_string().chars().count() <= MAX_MESSAGE, "{e}");
        }
        let _ = parse_ttl(&format!("{n}{unit}"));
        let _ = NodeIdentity::from_uri(&s);
        let _ = NodeIdentity::from_uri(&format!("cloudos://node/{s}?role=compute"));
    }
}
