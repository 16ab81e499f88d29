//! Property tests of what a cluster node tells: `CLUSTER SLOTS` replies and redirects.

use proptest::prelude::*;

use super::*;

/// A router that knows no node yet; nothing connects until a command is sent.
pub(super) fn router() -> ClusterRouter {
    let config = RedisConfig::default();
    let Ok(Some(template)) = Target::of(&config, Arc::from(Vec::new())) else {
        panic!("the default URL is a plain TCP target");
    };
    ClusterRouter {
        template,
        seeds: Vec::new(),
        map: RwLock::new(Arc::new(SlotMap::empty())),
        links: Mutex::new(HashMap::new()),
        refreshing: tokio::sync::Mutex::new(None),
        refreshed: AtomicU64::new(0),
        counters: Counters::default(),
        link_counters: Arc::default(),
        order: Turnstile::default(),
    }
}

/// Any reply value, shaped a little like `CLUSTER SLOTS` so that deeper checks are reached.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        prop_oneof![
            Just(-1i64),
            Just(0),
            Just(16_383),
            Just(16_384),
            Just(65_535),
            Just(65_536),
            Just(i64::MIN),
            Just(i64::MAX),
            any::<i64>()
        ]
        .prop_map(Value::Int),
        prop_oneof![
            Just(Vec::new()),
            Just(b"127.0.0.1".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12)
        ]
        .prop_map(Value::BulkString),
        ".{0,8}".prop_map(Value::SimpleString),
    ];
    leaf.prop_recursive(3, 40, 5, |inner| {
        proptest::collection::vec(inner, 0..5).prop_map(Value::Array)
    })
}

/// A well-formed `CLUSTER SLOTS` reply: disjoint ranges, each with a master from a few
/// (an empty host is the node that answered), and what each slot's owner must be.
fn slots_reply() -> impl Strategy<Value = (Value, Vec<Option<String>>)> {
    let cuts = proptest::collection::btree_set(0..SLOTS, 0..12);
    let masters = proptest::collection::vec(
        (
            prop_oneof![Just(String::new()), "[a-z]{1,6}", Just("10.0.0.1".to_owned())],
            1..=65_535u16,
        ),
        1..5,
    );
    (cuts, masters, any::<u64>()).prop_map(|(cuts, masters, seed)| {
        // Cut points into ranges; every other gap stays uncovered, by the seed's bits.
        let mut bounds: Vec<u16> = cuts.into_iter().collect();
        bounds.insert(0, 0);
        bounds.push(SLOTS);
        bounds.dedup();
        let mut owners = vec![None; usize::from(SLOTS)];
        let mut ranges = Vec::new();
        for (k, pair) in bounds.windows(2).enumerate() {
            if k % 3 == 2 && seed & (1 << (k % 64)) != 0 {
                continue;
            }
            let (start, end) = (pair[0], pair[1] - 1);
            let (host, port) = &masters[k % masters.len()];
            let shown = if host.is_empty() { "answered" } else { host.as_str() };
            for slot in start..=end {
                owners[usize::from(slot)] = Some(format!("{shown}:{port}"));
            }
            let master = Value::Array(vec![
                Value::BulkString(host.clone().into_bytes()),
                Value::Int(i64::from(*port)),
                Value::BulkString(b"node-id".to_vec()),
            ]);
            ranges.push(Value::Array(vec![
                Value::Int(i64::from(start)),
                Value::Int(i64::from(end)),
                master,
            ]));
        }
        (Value::Array(ranges), owners)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any reply: a slot map or an `UnexpectedReply` error, never a panic.
    #[test]
    fn any_reply_gives_a_map_or_an_error(value in any_value()) {
        let router = router();
        match router.parse_slots(&value, "answered:7000") {
            Ok(map) => prop_assert!(!map.nodes.is_empty() && map.nodes.len() <= usize::from(SLOTS)),
            Err(Error::UnexpectedReply { what, .. }) => prop_assert_eq!(what, "CLUSTER SLOTS"),
            Err(other) => return Err(TestCaseError::fail(other.to_string())),
        }
    }

    /// A well-formed reply gives every slot the master it names, and none to the others.
    #[test]
    fn well_formed_replies_map_every_slot((value, owners) in slots_reply()) {
        let router = router();
        let parsed = router.parse_slots(&value, "answered:7000");
        if owners.iter().all(Option::is_none) {
            prop_assert!(parsed.is_err(), "no master serves any slot");
            return Ok(());
        }
        let map = parsed.map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (slot, owner) in owners.iter().enumerate() {
            let slot = u16::try_from(slot).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(map.owner(slot).map(|n| n.address.as_str()), owner.as_deref(), "slot {}", slot);
        }
    }

    /// Any error text: a redirect or none, never a panic; a redirect reads back exactly.
    #[test]
    fn redirects_of_any_text(text in ".{0,30}", kind in prop_oneof![Just("MOVED"), Just("ASK")], slot in any::<u16>(), address in "[a-z0-9.:]{1,20}") {
        let _ = redirect(&text);
        let message = format!("{kind} {slot} {address}");
        prop_assert_eq!(redirect(&message), Some((slot, address.as_str())));
    }
}
