//! Redis Cluster routing: the slot map learned from `CLUSTER SLOTS`, one direct link per
//! master, per-node pipelines, and the redirects (`MOVED`, `ASK`, `TRYAGAIN`) handled so
//! that callers see only their command's own reply.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::Value;
use stateful_redis_core::{ConfigError, Error, RedisConfig};

use crate::connect::ConnectHook;
use crate::direct::{DirectLink, Reply, Target};
use crate::packed::Packable;
use crate::shared::LinkCounters;

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// How often one command may be redirected (`MOVED`, `ASK`) in a row before it fails (a
/// slot moving twice while a command is in flight is already rare).
const MAX_REDIRECTS: usize = 5;

/// The first pause before a command that met `TRYAGAIN` or `CLUSTERDOWN` is sent again;
/// it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The longest pause between two sends of a command that meets `TRYAGAIN`: a migration
/// that ends is noticed within it.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The shortest time between two topology refreshes that a redirect or a failure asked for.
const REFRESH_SPACING: Duration = Duration::from_millis(100);

/// The cluster hash slot of `key`: CRC16/XMODEM of its hash tag (the text between the
/// first `{` and the next `}`, when not empty), modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One master of the cluster, as the executor talks to it.
#[derive(Debug)]
pub(crate) struct Node {
    address: String,
    link: DirectLink,
    /// Commands sent to it.
    commands: AtomicU64,
    /// Pipelines sent to it.
    pipelines: AtomicU64,
}

/// Which node serves each slot.
#[derive(Debug)]
struct SlotMap {
    /// Index into `nodes`, or `u16::MAX` for a slot no master serves.
    owners: Box<[u16]>,
    nodes: Vec<Arc<Node>>,
}

impl SlotMap {
    fn empty() -> Self {
        Self {
            owners: vec![u16::MAX; usize::from(SLOTS)].into_boxed_slice(),
            nodes: Vec::new(),
        }
    }

    fn owner(&self, slot: u16) -> Option<&Arc<Node>> {
        let i = *self.owners.get(usize::from(slot))?;
        self.nodes.get(usize::from(i))
    }
}

/// Figures of one master.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// `host:port`.
    pub address: String,
    /// Slots it serves in the executor's map.
    pub slots: u32,
    /// Whether its link is connected now.
    pub connected: bool,
    /// Commands sent to it.
    pub commands: u64,
    /// Pipelines sent to it.
    pub pipelines: u64,
}

/// Counts of the cluster routing, cumulative.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Every master in the executor's map.
    pub nodes: Vec<NodeStats>,
    /// Slots no master serves in the executor's map.
    pub uncovered_slots: u32,
    /// Commands redirected by `MOVED` (their slot had moved for good).
    pub moved: u64,
    /// Commands redirected by `ASK` (their slot was migrating).
    pub ask: u64,
    /// Commands sent again after `TRYAGAIN` or `CLUSTERDOWN`.
    pub retried: u64,
    /// Times the slot map was read again from the cluster.
    pub refreshes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    moved: AtomicU64,
    ask: AtomicU64,
    retried: AtomicU64,
    refreshes: AtomicU64,
}

/// The cluster's topology as the executor knows it, and the links to its masters.
#[derive(Debug)]
pub(crate) struct ClusterRouter {
    /// Credentials, timeouts and hooks of every node's link.
    template: Target,
    /// Where to learn the topology when no known node answers.
    seeds: Vec<(String, u16)>,
    map: RwLock<Arc<SlotMap>>,
    /// Links by address, kept across refreshes so a node's connection is reused.
    links: Mutex<HashMap<String, Arc<Node>>>,
    /// One refresh at a time; the time of the last.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
    /// Refreshes finished: a caller that waited for the lock while one ran does not run
    /// another.
    refreshed: AtomicU64,
    counters: Counters,
    link_counters: Arc<LinkCounters>,
    /// Pipelines in progress, by the order they started: a redirected command waits for
    /// every earlier pipeline to finish before it goes again, so that commands on one
    /// entity keep their order across a redirect.
    order: Turnstile,
}

#[derive(Debug, Default)]
struct Turnstile {
    next: AtomicU64,
    active: Mutex<BTreeSet<u64>>,
    finished: tokio::sync::Notify,
}

impl Turnstile {
    fn enter(&self) -> Ticket<'_> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        self.active.lock().unwrap_or_else(|p| p.into_inner()).insert(number);
        Ticket {
            turnstile: self,
            number,
        }
    }
}

/// A pipeline's place in the order; leaving it (drop) lets later redirects go.
struct Ticket<'a> {
    turnstile: &'a Turnstile,
    number: u64,
}

impl Ticket<'_> {
    /// Waits until every pipeline that started before this one has finished.
    async fn wait_for_earlier(&self) {
        loop {
            let finished = self.turnstile.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let earlier = {
                let active = self.turnstile.active.lock().unwrap_or_else(|p| p.into_inner());
                active.range(..self.number).next().is_some()
            };
            if !earlier {
                return;
            }
            finished.await;
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.turnstile
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.number);
        self.turnstile.finished.notify_waiters();
    }
}

/// The commands going to one node, in their order.
type Group = (Arc<Node>, Vec<Pending>);

/// A command still to send: its position, where it goes, and the redirects it followed
/// since it last met `TRYAGAIN`.
struct Pending {
    index: usize,
    route: Route,
    redirects: usize,
}

impl Pending {
    fn to_slot(index: usize, slot: u16, redirects: usize) -> Self {
        Self {
            index,
            route: Route::Slot(slot),
            redirects,
        }
    }

    /// Whether it is sent after `ASKING`.
    fn asking(&self) -> bool {
        matches!(self.route, Route::Ask(_))
    }
}

/// Where one command goes.
#[derive(Debug, Clone)]
enum Route {
    /// The master of the slot.
    Slot(u16),
    /// A node that asked for it (`ASK`): sent after `ASKING`.
    Ask(String),
}

impl ClusterRouter {
    /// Learns the topology from the seeds; fails if none answers `CLUSTER SLOTS`.
    pub(crate) async fn connect(
        config: &RedisConfig,
        hooks: Arc<[Arc<dyn ConnectHook>]>,
        link_counters: Arc<LinkCounters>,
    ) -> Result<Self, Error> {
        let Some(template) = Target::of(config, hooks)? else {
            return Err(ConfigError::new(
                "redis.url",
                config.url.redacted(),
                "a cluster needs redis://host:port nodes (no TLS or unix sockets yet)",
            )
            .into());
        };
        let mut seeds = vec![(template.host().to_owned(), template.port())];
        for (i, seed) in config.seeds.iter().enumerate() {
            let parsed = url::Url::parse(seed.expose())
                .map_err(|e| ConfigError::new(format!("redis.seeds[{i}]"), seed.redacted(), e.to_string()))?;
            let host = parsed.host_str().unwrap_or_default().to_owned();
            seeds.push((host, parsed.port().unwrap_or(6379)));
        }
        let router = Self {
            template,
            seeds,
            map: RwLock::new(Arc::new(SlotMap::empty())),
            links: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(None),
            refreshed: AtomicU64::new(0),
            counters: Counters::default(),
            link_counters,
            order: Turnstile::default(),
        };
        router.refresh(true).await?;
        // Open the masters' links now: a wrong password shows at once. A master that is
        // down is not a reason to refuse the others' slots: its commands fail when sent.
        let map = router.current();
        for node in &map.nodes {
            match node.link.pipeline(&[], 0).await {
                Err(e @ Error::Auth { .. }) => return Err(e),
                Err(e) => tracing::warn!(node = %node.address, error = %e, "a cluster master cannot be reached"),
                Ok(_) => {}
            }
        }
        Ok(router)
    }

    fn current(&self) -> Arc<SlotMap> {
        Arc::clone(&self.map.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn node(&self, address: &str) -> Option<Arc<Node>> {
        let (host, port) = address.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let node = links.entry(address.to_owned()).or_insert_with(|| {
            Arc::new(Node {
                address: address.to_owned(),
                link: DirectLink::new(self.template.at(host, port), Arc::clone(&self.link_counters)),
                commands: AtomicU64::new(0),
                pipelines: AtomicU64::new(0),
            })
        });
        Some(Arc::clone(node))
    }

    /// Reads the slot map again, from the known masters then the seeds. With `force`
    /// false, a refresh within [`REFRESH_SPACING`] of the last is skipped (many redirects
    /// at once ask for one).
    pub(crate) async fn refresh(&self, force: bool) -> Result<(), Error> {
        let seen = self.refreshed.load(Ordering::Acquire);
        let mut last = self.refreshing.lock().await;
        // One ran while this caller waited for the lock: its map is as fresh as any.
        if !force && self.refreshed.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        if !force && last.is_some_and(|at| at.elapsed() < REFRESH_SPACING) {
            return Ok(());
        }
        let result = self.read_topology().await;
        // Spaced from its end: a refresh that waited out a dead node's timeout counts.
        *last = Some(Instant::now());
        self.refreshed.fetch_add(1, Ordering::AcqRel);
        result
    }

    async fn read_topology(&self) -> Result<(), Error> {
        // Connected masters first, then the others and the seeds: a dead master costs a
        // connect timeout only when nothing better answers.
        let (mut candidates, others): (Vec<Arc<Node>>, Vec<Arc<Node>>) = self
            .current()
            .nodes
            .iter()
            .cloned()
            .partition(|n| n.link.is_connected());
        candidates.extend(others);
        let mut candidates: Vec<String> = candidates.iter().map(|n| n.address.clone()).collect();
        for (h, p) in &self.seeds {
            let seed = format!("{h}:{p}");
            if !candidates.contains(&seed) {
                candidates.push(seed);
            }
        }
        let mut last_error = None;
        for address in candidates {
            let Some(node) = self.node(&address) else { continue };
            let mut cmd = Vec::new();
            redis::cmd("CLUSTER").arg("SLOTS").write_packed_command(&mut cmd);
            match node.link.pipeline(&cmd, 1).await {
                Ok(mut replies) => match replies.pop() {
                    Some(Ok(value)) => match self.parse_slots(&value, &address) {
                        Ok(map) => {
                            self.counters.refreshes.fetch_add(1, Ordering::Relaxed);
                            self.forget_links_outside(&map);
                            *self.map.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
                            return Ok(());
                        }
                        Err(e) => last_error = Some(e),
                    },
                    Some(Err(message)) => {
                        // A user without `cluster|slots` gets `NoPermission`.
                        last_error = Some(match crate::error::server_error(None, message) {
                            Error::Server { message } => Error::Server {
                                message: format!("{address} does not serve as a cluster node: {message}"),
                            },
                            other => other,
                        })
                    }
                    None => {}
                },
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Connection {
            message: "no cluster node to learn the topology from".into(),
            source: None,
        }))
    }

    /// Closes and forgets the links of nodes neither in `map` nor among the seeds (nodes
    /// removed from the cluster, or an address that changed).
    fn forget_links_outside(&self, map: &SlotMap) {
        let keep = |address: &str| {
            map.nodes.iter().any(|n| n.address == address)
                || self.seeds.iter().any(|(h, p)| format!("{h}:{p}") == address)
        };
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|address, node| {
            let kept = keep(address);
            if !kept {
                node.link.close_now();
            }
            kept
        });
    }

    /// A `CLUSTER SLOTS` reply as a slot map. A master announced with an empty host is at
    /// the address that answered.
    fn parse_slots(&self, value: &Value, answered: &str) -> Result<SlotMap, Error> {
        let bad = |why: &str| Error::UnexpectedReply {
            what: "CLUSTER SLOTS",
            detail: why.to_owned(),
        };
        let Value::Array(ranges) = value else {
            return Err(bad("not an array"));
        };
        let answered_host = answered.rsplit_once(':').map_or(answered, |(h, _)| h);
        let mut map = SlotMap::empty();
        let mut index: HashMap<String, u16> = HashMap::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(bad("a range is not an array"));
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return Err(bad("a range lacks its bounds or master"));
            };
            let host = match master.first() {
                Some(Value::BulkString(h)) if !h.is_empty() => String::from_utf8_lossy(h).into_owned(),
                _ => answered_host.to_owned(),
            };
            let Some(Value::Int(port)) = master.get(1) else {
                return Err(bad("a master lacks its port"));
            };
            let address = format!("{host}:{port}");
            let i = match index.get(&address) {
                Some(&i) => i,
                None => {
                    // Each master serves a slot at least; more would also overflow the
                    // u16 index (and its `u16::MAX` for "no master").
                    if map.nodes.len() >= usize::from(SLOTS) {
                        return Err(bad("more masters than slots"));
                    }
                    let node = self
                        .node(&address)
                        .ok_or_else(|| bad("a master's address is unusable"))?;
                    map.nodes.push(node);
                    let i = (map.nodes.len() - 1) as u16;
                    index.insert(address, i);
                    i
                }
            };
            let (start, end) = (*start, *end);
            if !(0..i64::from(SLOTS)).contains(&start) || !(start..i64::from(SLOTS)).contains(&end) {
                return Err(bad("a slot range is out of bounds"));
            }
            for slot in start..=end {
                map.owners[slot as usize] = i;
            }
        }
        if map.nodes.is_empty() {
            return Err(bad("no master serves any slot"));
        }
        Ok(map)
    }

    /// Sends `commands`, each to the master of its slot, one pipeline per node, all nodes
    /// at once, and returns each command's reply in order: redirects are followed
    /// (`MOVED` also updates the map, and asks for a refresh), up to [`MAX_REDIRECTS`] in a
    /// row. A node that cannot be reached fails its commands with the connection's error
    /// (their outcome unknown) and asks for a refresh, since a failover may have moved its
    /// slots.
    ///
    /// `TRYAGAIN` and `CLUSTERDOWN` are sent again after a pause (10 ms doubling to 100 ms)
    /// until the response timeout has passed since the first send; then the command gets
    /// the server's reply (`Error::Unavailable`: not applied). In a migrating slot, Redis
    /// answers `TRYAGAIN` to a command on several keys while any of them is missing on the
    /// importing node, and an entity's lease, fence and message-id keys often are missing
    /// (free lease, first message): such a command can run only once the slot is
    /// moved (`SETSLOT NODE`), so it waits for that rather than fail. Keeping every key
    /// present instead would need leases and message ids without expiry, and would still
    /// meet `TRYAGAIN` for a new entity and while `MIGRATE` splits an entity's keys. A
    /// `TRYAGAIN` starts the redirect count again: `ASK` then `TRYAGAIN` is the normal
    /// cycle of a migrating slot, bounded by the deadline.
    pub(crate) async fn pipeline<C: Packable + Sync>(&self, commands: &[(u16, &C)]) -> Vec<Result<Reply, Error>> {
        let n = commands.len();
        let mut results: Vec<Option<Result<Reply, Error>>> = (0..n).map(|_| None).collect();
        let mut pending: Vec<Pending> = commands
            .iter()
            .enumerate()
            .map(|(i, (slot, _))| Pending::to_slot(i, *slot, 0))
            .collect();
        let mut refresh_wanted = false;
        let deadline = Instant::now() + self.template.response_timeout();
        let mut pause = FIRST_RETRY_PAUSE;
        let ticket = self.order.enter();
        let mut round = 0;
        while !pending.is_empty() {
            if round > 0 {
                // Commands sent earlier on the same entities (in pipelines still retrying
                // their own redirects) go first; bounded, so that a pipeline stuck on a dead
                // node delays others' redirects by at most a reply timeout.
                let _ = tokio::time::timeout(self.template.response_timeout(), ticket.wait_for_earlier()).await;
            }
            if refresh_wanted {
                // A failed refresh keeps the old map; the commands then fail as before.
                let _ = self.refresh(false).await;
                refresh_wanted = false;
            }
            let map = self.current();
            let mut pending_unowned: Vec<Pending> = Vec::new();
            // Group by node, keeping each node's commands in their order.
            let mut groups: Vec<Group> = Vec::new();
            for command in pending.drain(..) {
                let i = command.index;
                let node = match &command.route {
                    Route::Slot(slot) => match map.owner(*slot) {
                        Some(node) => Arc::clone(node),
                        // Read the map again once: a new master may serve it by now.
                        None if round == 0 => {
                            refresh_wanted = true;
                            pending_unowned.push(command);
                            continue;
                        }
                        None => {
                            results[i] = Some(Err(Error::Connection {
                                message: format!("no master serves slot {slot} (the cluster lost it)"),
                                source: None,
                            }));
                            continue;
                        }
                    },
                    Route::Ask(address) => match self.node(address) {
                        Some(node) => node,
                        None => {
                            results[i] = Some(Ok(Err(format!("ASK to an unusable address {address}"))));
                            continue;
                        }
                    },
                };
                match groups.iter_mut().find(|(g, _)| Arc::ptr_eq(g, &node)) {
                    Some((_, members)) => members.push(command),
                    None => groups.push((node, vec![command])),
                }
            }
            let sends = groups.iter().map(|(node, members)| {
                let mut packed = Vec::with_capacity(members.len() * 128);
                let mut count = 0;
                for command in members {
                    if command.asking() {
                        redis::cmd("ASKING").write_packed_command(&mut packed);
                        count += 1;
                    }
                    commands[command.index].1.pack_into(&mut packed);
                    count += 1;
                }
                node.commands.fetch_add(members.len() as u64, Ordering::Relaxed);
                node.pipelines.fetch_add(1, Ordering::Relaxed);
                async move { node.link.pipeline(&packed, count).await }
            });
            let replies = futures_util::future::join_all(sends).await;
            let mut retry = false;
            for ((_, members), outcome) in groups.into_iter().zip(replies) {
                let replies = match outcome {
                    Ok(replies) => replies,
                    Err(e) => {
                        refresh_wanted = true;
                        for command in members {
                            results[command.index] = Some(Err(e.duplicate()));
                        }
                        continue;
                    }
                };
                let mut replies = replies.into_iter();
                for mut command in members {
                    let i = command.index;
                    let refused = if command.asking() {
                        replies.next().and_then(Result::err)
                    } else {
                        None
                    };
                    let reply = match (refused, replies.next()) {
                        // A refused `ASKING` (an ACL without it) explains the refusal that
                        // followed (`MOVED` back to the source), which would loop.
                        (Some(refused), Some(Err(_))) => Err(refused),
                        (_, reply) => reply.unwrap_or_else(|| Err("no reply".to_owned())),
                    };
                    let Err(message) = &reply else {
                        results[i] = Some(Ok(reply));
                        continue;
                    };
                    let redirect_to = redirect(message);
                    let kind = message.split(' ').next().unwrap_or("");
                    match (kind, redirect_to) {
                        ("MOVED" | "ASK", Some(_)) if command.redirects >= MAX_REDIRECTS => {
                            results[i] = Some(Ok(Err(format!(
                                "redirected more than {MAX_REDIRECTS} times in a row, the cluster's topology keeps \
                                 changing: {message}"
                            ))));
                        }
                        ("MOVED", Some((slot, address))) => {
                            self.counters.moved.fetch_add(1, Ordering::Relaxed);
                            self.note_moved(slot, address);
                            refresh_wanted = true;
                            pending.push(Pending::to_slot(i, commands[i].0, command.redirects + 1));
                        }
                        ("ASK", Some((_, address))) => {
                            self.counters.ask.fetch_add(1, Ordering::Relaxed);
                            command.route = Route::Ask(address.to_owned());
                            command.redirects += 1;
                            pending.push(command);
                        }
                        ("TRYAGAIN" | "CLUSTERDOWN", _) if Instant::now() < deadline => {
                            self.counters.retried.fetch_add(1, Ordering::Relaxed);
                            if kind == "CLUSTERDOWN" {
                                refresh_wanted = true;
                            }
                            retry = true;
                            pending.push(Pending::to_slot(i, commands[i].0, 0));
                        }
                        _ => results[i] = Some(Ok(reply)),
                    }
                }
            }
            pending.extend(pending_unowned);
            // Redirected commands go again in their original order.
            pending.sort_by_key(|command| command.index);
            if retry && !pending.is_empty() {
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
            round += 1;
        }
        drop(ticket);
        if refresh_wanted {
            let _ = self.refresh(false).await;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Ok(Err("no reply".to_owned()))))
            .collect()
    }

    /// A `MOVED` says for certain who serves a slot now: take it before the refresh.
    fn note_moved(&self, slot: u16, address: &str) {
        let Some(node) = self.node(address) else { return };
        let mut guard = self.map.write().unwrap_or_else(|p| p.into_inner());
        let map = &**guard;
        let mut nodes = map.nodes.clone();
        let i = match nodes.iter().position(|n| Arc::ptr_eq(n, &node)) {
            Some(i) => i,
            None => {
                nodes.push(node);
                nodes.len() - 1
            }
        };
        let mut owners = map.owners.clone();
        if let Some(owner) = owners.get_mut(usize::from(slot)) {
            *owner = i as u16;
        }
        *guard = Arc::new(SlotMap { owners, nodes });
    }

    /// The master of `slot` now, as `host:port`.
    pub(crate) fn address_of(&self, slot: u16) -> Option<String> {
        self.current().owner(slot).map(|n| n.address.clone())
    }

    /// Sends `commands` to every master as one pipeline each (script loads, say); returns
    /// each master's address with its replies, or its error.
    pub(crate) async fn to_every_master(&self, commands: &[redis::Cmd]) -> Vec<(String, Result<Vec<Reply>, Error>)> {
        let map = self.current();
        let mut packed = Vec::new();
        for cmd in commands {
            cmd.write_packed_command(&mut packed);
        }
        let sends = map.nodes.iter().map(|node| {
            let packed = &packed;
            async move { (node.address.clone(), node.link.pipeline(packed, commands.len()).await) }
        });
        futures_util::future::join_all(sends).await
    }

    /// PINGs every master's link; one silent past the response timeout reconnects.
    pub(crate) async fn probe(&self) {
        let map = self.current();
        for node in &map.nodes {
            node.link.probe().await;
        }
    }

    /// The routing's counts and every master's figures.
    pub(crate) fn stats(&self) -> ClusterStats {
        let map = self.current();
        let mut nodes: Vec<NodeStats> = map
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| NodeStats {
                address: node.address.clone(),
                slots: map.owners.iter().filter(|&&o| usize::from(o) == i).count() as u32,
                connected: node.link.is_connected(),
                commands: node.commands.load(Ordering::Relaxed),
                pipelines: node.pipelines.load(Ordering::Relaxed),
            })
            .collect();
        nodes.sort_by(|a, b| a.address.cmp(&b.address));
        ClusterStats {
            nodes,
            uncovered_slots: map.owners.iter().filter(|&&o| o == u16::MAX).count() as u32,
            moved: self.counters.moved.load(Ordering::Relaxed),
            ask: self.counters.ask.load(Ordering::Relaxed),
            retried: self.counters.retried.load(Ordering::Relaxed),
            refreshes: self.counters.refreshes.load(Ordering::Relaxed),
        }
    }

    /// Closes every link.
    pub(crate) fn close(&self) {
        for node in self.links.lock().unwrap_or_else(|p| p.into_inner()).values() {
            node.link.close_now();
        }
    }
}

/// `MOVED 3999 127.0.0.1:6381` or `ASK 3999 127.0.0.1:6381`: the slot and the address.
fn redirect(message: &str) -> Option<(u16, &str)> {
    let mut parts = message.split_whitespace().skip(1);
    let slot = parts.next()?.parse().ok()?;
    let address = parts.next()?;
    Some((slot, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"ns:{device-1}:s"), key_slot(b"ns:{device-1}:l"));
        assert_eq!(key_slot(b"ns:{device-1}:s"), key_slot(b"device-1"));
        // An empty tag does not count: the whole key is hashed.
        assert_ne!(key_slot(b"a{}b"), key_slot(b""));
    }

    #[tokio::test]
    async fn a_redirect_waits_for_earlier_pipelines_only() {
        let turnstile = Turnstile::default();
        let first = turnstile.enter();
        let second = turnstile.enter();
        // The first has nobody before it.
        first.wait_for_earlier().await;
        {
            let waiting = second.wait_for_earlier();
            tokio::pin!(waiting);
            assert!(
                futures_util::FutureExt::now_or_never(waiting.as_mut()).is_none(),
                "the first is still running"
            );
            drop(first);
            waiting.await;
        }
        drop(second);
        assert!(turnstile.active.lock().expect("lock").is_empty());
    }

    #[test]
    fn redirects_parse() {
        assert_eq!(redirect("MOVED 3999 127.0.0.1:6381"), Some((3999, "127.0.0.1:6381")));
        assert_eq!(redirect("ASK 1 h:1"), Some((1, "h:1")));
        assert_eq!(redirect("MOVED x"), None);
    }

    /// Found while writing the property tests: past 65 535 masters the u16 index of a
    /// master wrapped, and slots went to the wrong node (or to none).
    #[test]
    fn more_masters_than_slots_is_an_error() {
        let router = proptests::router();
        let ranges = (0..70_000u32)
            .map(|n| {
                let slot = Value::Int(i64::from(n % u32::from(SLOTS)));
                let master = Value::Array(vec![Value::BulkString(format!("h{n}").into_bytes()), Value::Int(1)]);
                Value::Array(vec![slot.clone(), slot, master])
            })
            .collect();
        assert!(matches!(
            router.parse_slots(&Value::Array(ranges), "h:1"),
            Err(Error::UnexpectedReply { .. })
        ));
    }
}

#[cfg(test)]
mod proptests;
