//! The listing of a namespace's entities: `SCAN` pages over every server, never blocking one.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use redis::Value;
use stateful_redis_core::{Error, KeyLayout, Namespace};
use stateful_redis_pool::{Reply, SLOTS, server_error};

use crate::executor::Inner;

/// `SCAN`'s `COUNT` unless [`EntityScan::with_count`] says otherwise.
const DEFAULT_COUNT: u32 = 1000;

/// Pages through the entities of one namespace: the ids of its state keys, found with
/// `SCAN <cursor> MATCH <ns's state-key pattern> COUNT <n>` on the server, or on every master
/// of a cluster (each page asks each master not yet done once, all at once). Each `SCAN`
/// looks at about `COUNT` keys and returns, so the listing never blocks a server the way
/// `KEYS` would; other namespaces, and the other keys of an entity (lease, fence, message
/// ids), are not listed. Made by [`StateHandle::entities`](crate::StateHandle::entities).
///
/// What `SCAN` guarantees, and so what this does: an entity that exists from the first page
/// to the last is listed at least once; one created or deleted meanwhile may or may not be;
/// and `SCAN` may return a key more than once, so an entity may come again in a later page
/// ([`next_page`](Self::next_page) removes repeats within a page, [`all`](Self::all) across
/// the whole listing). On a cluster, a slot migrating during the listing may hide or repeat
/// its entities, and a master replaced meanwhile ends the listing with
/// [`Error::Unavailable`]: list again. The ACL user needs `+scan`.
pub struct EntityScan {
    exec: Arc<Inner>,
    namespace: Namespace,
    keys: KeyLayout,
    pattern: String,
    count: u32,
    /// Each server's cursor, found at the first page.
    servers: Option<Vec<ServerCursor>>,
}

impl fmt::Debug for EntityScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityScan")
            .field("namespace", &self.namespace)
            .field("count", &self.count)
            .field(
                "servers_left",
                &self.servers.as_ref().map(|s| s.iter().filter(|c| !c.done).count()),
            )
            .finish_non_exhaustive()
    }
}

/// Where one server's `SCAN` stands.
struct ServerCursor {
    /// `host:port`.
    address: String,
    /// Cluster only: a slot the server serves, to route the `SCAN` to it.
    slot: u16,
    cursor: u64,
    done: bool,
}

impl EntityScan {
    pub(crate) fn new(exec: Arc<Inner>, namespace: Namespace) -> Self {
        let keys = KeyLayout::new(&namespace);
        Self {
            pattern: keys.state_pattern(),
            keys,
            exec,
            namespace,
            count: DEFAULT_COUNT,
            servers: None,
        }
    }

    /// The same listing with `count` as `SCAN`'s `COUNT` (default 1000, at least 1): about
    /// how many keys each server looks at per page. Larger pages take fewer round trips and
    /// hold a server a little longer per call.
    pub fn with_count(mut self, count: u32) -> Self {
        self.count = count.max(1);
        self
    }

    /// The next entities, each once within the page (an entity may come again in a later
    /// page, see above); `None` once every server was scanned to its end. Never an empty
    /// page: it asks again until it finds entities or the listing ends.
    pub async fn next_page(&mut self) -> Result<Option<Vec<String>>, Error> {
        loop {
            if self.servers.is_none() {
                self.servers = Some(self.find_servers()?);
            }
            let Some(servers) = self.servers.as_mut() else {
                return Ok(None);
            };
            if servers.iter().all(|s| s.done) {
                return Ok(None);
            }
            let keys = self.round().await?;
            let mut seen = HashSet::with_capacity(keys.len());
            let entities: Vec<String> = keys
                .iter()
                .filter_map(|key| self.keys.entity_of_state_key(key))
                .filter(|entity| seen.insert(*entity))
                .map(str::to_owned)
                .collect();
            if !entities.is_empty() {
                return Ok(Some(entities));
            }
        }
    }

    /// Every entity, each once, sorted: the whole listing (from where it stands) in memory.
    pub async fn all(mut self) -> Result<Vec<String>, Error> {
        let mut all = BTreeSet::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all.into_iter().collect())
    }

    /// The servers to scan: the one server, or every master of a cluster with a slot of its own.
    fn find_servers(&self) -> Result<Vec<ServerCursor>, Error> {
        let pool = &self.exec.pool;
        let cursor = |address: String, slot: u16| ServerCursor {
            address,
            slot,
            cursor: 0,
            done: false,
        };
        if !pool.is_cluster() {
            return Ok(vec![cursor(String::new(), 0)]);
        }
        let mut servers: Vec<ServerCursor> = Vec::new();
        for slot in 0..SLOTS {
            let Some(address) = pool.master_of_slot(slot) else {
                return Err(Error::Unavailable {
                    message: format!("no master serves slot {slot}: a listing would miss its entities"),
                });
            };
            if !servers.iter().any(|s| s.address == address) {
                servers.push(cursor(address, slot));
            }
        }
        Ok(servers)
    }

    /// One `SCAN` on each server not done, all at once; the keys they returned.
    async fn round(&mut self) -> Result<Vec<String>, Error> {
        let _op = self.exec.begin()?;
        let pool = &self.exec.pool;
        let Some(servers) = self.servers.as_mut() else {
            return Ok(Vec::new());
        };
        let scan = |cursor: u64| {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(self.count);
            cmd
        };
        let mut pending: Vec<&mut ServerCursor> = servers.iter_mut().filter(|s| !s.done).collect();
        let replies: Vec<Result<Reply, Error>> = if pool.is_cluster() {
            for server in &mut pending {
                server.slot = slot_of(pool, &server.address, server.slot)?;
            }
            let commands: Vec<redis::Cmd> = pending.iter().map(|s| scan(s.cursor)).collect();
            let routed: Vec<(u16, &redis::Cmd)> = pending.iter().map(|s| s.slot).zip(&commands).collect();
            pool.cluster_pipeline(&routed).await
        } else {
            let command = scan(pending.first().map_or(0, |s| s.cursor));
            pool.to_each_server(&[command])
                .await
                .into_iter()
                .map(|(_, replies)| replies.and_then(|r| r.into_iter().next().ok_or_else(no_reply)))
                .collect()
        };
        let mut keys = Vec::new();
        for (server, reply) in pending.into_iter().zip(replies) {
            let value = reply?.map_err(|message| server_error(None, message))?;
            let (next, found) = parse_scan(value).map_err(|detail| Error::UnexpectedReply { what: "SCAN", detail })?;
            server.cursor = next;
            server.done = next == 0;
            keys.extend(found);
        }
        Ok(keys)
    }
}

/// A slot `address` serves now: `slot` if it still does, else another; the master being gone
/// ends the listing (a new one's cursors are not the old one's).
fn slot_of(pool: &stateful_redis_pool::Pool, address: &str, slot: u16) -> Result<u16, Error> {
    if pool.master_of_slot(slot).as_deref() == Some(address) {
        return Ok(slot);
    }
    (0..SLOTS)
        .find(|&s| pool.master_of_slot(s).as_deref() == Some(address))
        .ok_or_else(|| Error::Unavailable {
            message: format!("the master {address} left the cluster during the listing: list again"),
        })
}

fn no_reply() -> Error {
    Error::UnexpectedReply {
        what: "SCAN",
        detail: "no reply".into(),
    }
}

/// `[cursor, [key, …]]`: the next cursor and the keys (those that are not UTF-8 are no
/// entity's, and left out).
fn parse_scan(value: Value) -> Result<(u64, Vec<String>), String> {
    let Value::Array(mut items) = value else {
        return Err(format!("expected an array, got {value:?}"));
    };
    if items.len() != 2 {
        return Err(format!("expected 2 items, got {}", items.len()));
    }
    let keys = items.pop();
    let cursor = match items.pop() {
        Some(Value::BulkString(b)) => std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()),
        Some(Value::SimpleString(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or("the cursor is not a number")?;
    let Some(Value::Array(keys)) = keys else {
        return Err("expected an array of keys".into());
    };
    let keys = keys
        .into_iter()
        .filter_map(|key| match key {
            Value::BulkString(b) => String::from_utf8(b).ok(),
            Value::SimpleString(s) => Some(s),
            _ => None,
        })
        .collect();
    Ok((cursor, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_replies_are_read_and_malformed_ones_refused() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            bulk("17"),
            Value::Array(vec![bulk("a"), Value::BulkString(vec![0xff])]),
        ]);
        assert_eq!(parse_scan(reply), Ok((17, vec!["a".to_owned()])));
        assert_eq!(
            parse_scan(Value::Array(vec![bulk("0"), Value::Array(vec![])])),
            Ok((0, vec![]))
        );
        for bad in [
            Value::Nil,
            Value::Array(vec![bulk("1")]),
            Value::Array(vec![bulk("x"), Value::Array(vec![])]),
            Value::Array(vec![bulk("1"), bulk("k")]),
        ] {
            assert!(parse_scan(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
