//! Placement: which shard a record belongs to, and which nodes hold a shard.
//!
//! A record's shard is `xxh3_64(ETF({Resource, PK})) mod shards`: the XXH3 hash (seed 0) of the
//! external term format of `{Resource, PK}` as [`crate::wire::etf::encode`] writes it (maps in
//! key order), which depends on neither the build, the Rust version nor the platform — unlike
//! std's `DefaultHasher` or a derived `Hash` — so nodes of different versions agree during a
//! rolling upgrade. The tests pin a few values: a change to the encoding or the hash fails them.
//!
//! A shard's replicas are the `replicas` nodes with the highest `xxh3_64(node name ++ shard)`
//! (rendezvous, or highest-random-weight, hashing): every node computes the same answer from the
//! same member list, and a member joining or leaving changes only the shards it wins or held.

use crate::term::{Atom, Value};
use crate::wire::etf;
use xxhash_rust::xxh3::xxh3_64;

/// The shard of the record of `resource` with primary key `pk` (a map of the key fields),
/// among `shards` (> 0).
pub fn shard_of(resource: Atom, pk: &Value, shards: u32) -> u32 {
    let mut bytes = Vec::with_capacity(64);
    etf::encode(&Value::pair(Value::Atom(resource), pk.clone()), &mut bytes);
    (xxh3_64(&bytes) % u64::from(shards.max(1))) as u32
}

fn weight(node: &str, shard: u32) -> u64 {
    let mut bytes = Vec::with_capacity(node.len() + 4);
    bytes.extend_from_slice(node.as_bytes());
    bytes.extend_from_slice(&shard.to_be_bytes());
    xxh3_64(&bytes)
}

/// The `replicas` members that hold `shard`, the first one preferred (its leader when it is
/// up). Fewer when there are fewer members.
pub fn replicas_of<'a>(shard: u32, members: &[&'a str], replicas: usize) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &'a str)> = members.iter().map(|m| (weight(m, shard), *m)).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.into_iter().take(replicas).map(|(_, m)| m).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    fn pk(s: &str) -> Value {
        parse_term(s).unwrap()
    }

    #[test]
    fn shards_are_pinned_across_builds() {
        let user = Atom::new("Elixir.MyApp.User").unwrap();
        // Pinned: these must never change (nodes of different versions must agree).
        let pinned = [
            (
                pk("#{id => 1}"),
                (18_329_773_499_667_709_443u64 % 64) as u32,
            ),
            (pk("#{id => <<\"a\">>}"), 33),
        ];
        let mut bytes = Vec::new();
        etf::encode(
            &Value::pair(Value::Atom(user), pk("#{id => 1}")),
            &mut bytes,
        );
        assert_eq!(
            bytes,
            [
                131, 104, 2, 119, 17, 69, 108, 105, 120, 105, 114, 46, 77, 121, 65, 112, 112, 46,
                85, 115, 101, 114, 116, 0, 0, 0, 1, 119, 2, 105, 100, 97, 1
            ],
            "the encoding the shard hash reads"
        );
        assert_eq!(xxh3_64(&bytes), 18_329_773_499_667_709_443, "XXH3 of it");
        for (key, shard) in pinned {
            assert_eq!(shard_of(user, &key, 64), shard);
        }
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let r = Atom::new("r").unwrap();
        let mut counts = [0u32; 64];
        for i in 0..64_000 {
            counts[shard_of(r, &pk(&format!("#{{id => {i}}}")), 64) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (700..1300).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_new_member_takes_only_its_share() {
        let three = ["a@h", "b@h", "c@h"];
        let four = ["a@h", "b@h", "c@h", "d@h"];
        let mut moved = 0;
        for shard in 0..1024 {
            let before = replicas_of(shard, &three, 1);
            let after = replicas_of(shard, &four, 1);
            if before != after {
                // A shard only ever moves to the new member.
                assert_eq!(after, vec!["d@h"]);
                moved += 1;
            }
            // Member order does not matter.
            let shuffled = ["c@h", "a@h", "d@h", "b@h"];
            assert_eq!(
                replicas_of(shard, &shuffled, 3),
                replicas_of(shard, &four, 3)
            );
        }
        // About a quarter of the shards move.
        assert!((180..340).contains(&moved), "{moved}");
        assert_eq!(replicas_of(7, &["a@h", "b@h"], 3).len(), 2);
    }
}
