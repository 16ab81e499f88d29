//! The key layout in Redis: every key of one entity carries the entity's hash tag.

use crate::id::Namespace;

/// Suffix of the state hash (`v`, `d`, `st`, `t`, `f`).
pub const STATE_SUFFIX: &str = ":s";
/// Suffix of the lease key.
pub const LEASE_SUFFIX: &str = ":l";
/// Suffix of the fence counter.
pub const FENCE_SUFFIX: &str = ":f";
/// Suffix of the recent message ids (zset: id -> µs).
pub const MESSAGES_SUFFIX: &str = ":m";
/// Suffix of the first outcomes of recent messages (hash: id -> outcome).
pub const OUTCOMES_SUFFIX: &str = ":mr";
/// Suffix of the automatic ids of fenced writes (zset), kept apart from callers' ids.
pub const AUTO_MESSAGES_SUFFIX: &str = ":a";
/// Suffix of the first outcomes of fenced writes' automatic ids (hash).
pub const AUTO_OUTCOMES_SUFFIX: &str = ":ar";

/// Builds the keys of entities in one namespace: `<ns>:{<entity>}:<kind>`.
///
/// The braces are literal: they form the Redis Cluster hash tag, so all keys of one
/// entity live in one slot and every script touches one slot. The id must already be
/// validated ([`validate_entity_id`](crate::validate_entity_id)).
#[derive(Debug, Clone)]
pub struct KeyLayout {
    /// `<ns>:{`
    prefix: Box<str>,
}

impl KeyLayout {
    /// The layout of `namespace`.
    pub fn new(namespace: &Namespace) -> Self {
        Self {
            prefix: format!("{namespace}:{{").into(),
        }
    }

    /// Writes `<ns>:{<entity>}<suffix>` into `out`, replacing what it held.
    pub fn write_key(&self, entity: &str, suffix: &str, out: &mut String) {
        out.clear();
        out.reserve(self.prefix.len() + entity.len() + 1 + suffix.len());
        out.push_str(&self.prefix);
        out.push_str(entity);
        out.push('}');
        out.push_str(suffix);
    }

    /// `<ns>:{<entity>}<suffix>` as a new string.
    pub fn key(&self, entity: &str, suffix: &str) -> String {
        let mut out = String::new();
        self.write_key(entity, suffix, &mut out);
        out
    }

    /// The state hash of `entity`.
    pub fn state(&self, entity: &str) -> String {
        self.key(entity, STATE_SUFFIX)
    }

    /// The lease key of `entity`.
    pub fn lease(&self, entity: &str) -> String {
        self.key(entity, LEASE_SUFFIX)
    }

    /// The fence counter of `entity`.
    pub fn fence(&self, entity: &str) -> String {
        self.key(entity, FENCE_SUFFIX)
    }

    /// The recent message ids of `entity`.
    pub fn messages(&self, entity: &str) -> String {
        self.key(entity, MESSAGES_SUFFIX)
    }

    /// The first outcomes of `entity`'s recent messages.
    pub fn outcomes(&self, entity: &str) -> String {
        self.key(entity, OUTCOMES_SUFFIX)
    }

    /// The `SCAN … MATCH` pattern of every state key of this namespace (and of no other):
    /// [`state`](Self::state) with a `*` for the entity, the rest glob-escaped.
    pub fn state_pattern(&self) -> String {
        let (before, after) = self.state_parts();
        let mut pattern = String::with_capacity(before.len() + after.len() + 4);
        escape_glob(&before, &mut pattern);
        pattern.push('*');
        escape_glob(&after, &mut pattern);
        pattern
    }

    /// The entity whose [`state`](Self::state) key `key` is, or `None` when it is not a
    /// state key of this namespace (another namespace, another kind of key, or an id that
    /// does not pass [`validate_entity_id`](crate::validate_entity_id)).
    pub fn entity_of_state_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        let (before, after) = self.state_parts();
        let entity = key.strip_prefix(before.as_str())?.strip_suffix(after.as_str())?;
        crate::validate_entity_id(entity).ok()?;
        Some(entity)
    }

    /// The state key of an entity split around the entity: what comes before and after it.
    fn state_parts(&self) -> (String, String) {
        // No id holds a control character: NUL marks the entity's place unambiguously.
        const MARK: &str = "\u{0}";
        let key = self.state(MARK);
        match key.split_once(MARK) {
            Some((before, after)) => (before.to_owned(), after.to_owned()),
            None => (key, String::new()),
        }
    }

    /// Presence shard `shard`: `<ns>:presence:{<shard>}`, each shard under its own hash tag.
    pub fn presence(&self, shard: u32) -> String {
        // The prefix ends with the hash tag's opening brace: `<ns>:{`.
        let namespace = &self.prefix[..self.prefix.len() - 2];
        format!("{namespace}:presence:{{{shard}}}")
    }
}

/// The part of `key` Redis Cluster hashes: the text inside the first `{…}` if it is not
/// empty, else the whole key. All keys of one entity share it.
pub fn hash_tag(key: &str) -> &str {
    // Byte scans: keys are short, and `{` and `}` are ASCII (never inside a UTF-8 sequence).
    let bytes = key.as_bytes();
    if let Some(open) = bytes.iter().position(|&b| b == b'{')
        && let Some(len) = bytes[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// Appends `text` to `out` with the glob characters of `SCAN … MATCH` escaped.
fn escape_glob(text: &str, out: &mut String) {
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_puts_the_hash_tag_around_the_entity_only() {
        let keys = KeyLayout::new(&Namespace::new("app").expect("valid"));
        assert_eq!(keys.state("dev:1"), "app:{dev:1}:s");
        assert_eq!(keys.lease("d"), "app:{d}:l");
        assert_eq!(keys.fence("d"), "app:{d}:f");
        assert_eq!(keys.messages("d"), "app:{d}:m");
        assert_eq!(keys.outcomes("d"), "app:{d}:mr");
        assert_eq!(keys.presence(7), "app:presence:{7}");
        assert_eq!(hash_tag("app:{dev:1}:s"), "dev:1");
        assert_eq!(hash_tag("app:presence:{7}"), "7");
        assert_eq!(hash_tag("plain"), "plain");
        assert_eq!(hash_tag("a{}b{c}"), "a{}b{c}");
        let mut buf = String::from("junk");
        keys.write_key("x", STATE_SUFFIX, &mut buf);
        assert_eq!(buf, "app:{x}:s");
    }

    #[test]
    fn state_keys_are_matched_and_parsed_back() {
        let keys = KeyLayout::new(&Namespace::new("app").expect("valid"));
        assert_eq!(keys.state_pattern(), "app:{*}:s");
        assert_eq!(keys.entity_of_state_key(&keys.state("dev:1")), Some("dev:1"));
        assert_eq!(keys.entity_of_state_key("app:{d}:l"), None);
        assert_eq!(keys.entity_of_state_key("app:b:{d}:s"), None);
        assert_eq!(keys.entity_of_state_key("other:{d}:s"), None);
        assert_eq!(keys.entity_of_state_key("app:{}:s"), None);
        assert_eq!(keys.entity_of_state_key("app:presence:{7}"), None);
        let odd = KeyLayout::new(&Namespace::new("a*b?[c]\\").expect("valid"));
        assert_eq!(odd.state_pattern(), "a\\*b\\?\\[c\\]\\\\:{*}:s");
        assert_eq!(odd.entity_of_state_key(&odd.state("x*")), Some("x*"));
    }
}
