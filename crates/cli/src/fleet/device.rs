//! A simulated device: its record in Redis, its state machine, its message stream, and the
//! run's ledger of what was acknowledged for it (what verification expects to find).

use std::sync::atomic::{AtomicU64, Ordering};

/// A device's value in Redis. Each message is applied once, in order: `messages` counts the
/// applied ones and `last_seq` is the newest one's number, so a message applied twice
/// makes `messages` exceed `last_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Device {
    /// Messages applied.
    pub(crate) messages: u64,
    /// The sequence number of the newest message applied (messages are numbered from 1).
    pub(crate) last_seq: u64,
    /// Telemetry readings written.
    pub(crate) telemetry: u64,
    /// The newest reading.
    pub(crate) reading: u32,
}

/// The device's statuses; `""` is a device never seen.
pub(crate) const OFFLINE: &str = "offline";
/// Connected.
pub(crate) const ONLINE: &str = "online";
/// Installing firmware.
pub(crate) const UPDATING: &str = "updating";

/// The next status from `current`, by `roll` (0..100): online → updating (most often) or
/// offline; updating → online; offline (or none) → online.
pub(crate) fn next_status(current: &str, roll: u64) -> &'static str {
    match current {
        ONLINE if roll < 25 => OFFLINE,
        ONLINE => UPDATING,
        _ => ONLINE,
    }
}

/// The id of `device`'s message `seq`: the same on every delivery.
pub(crate) fn message_id(device: &str, seq: u64) -> String {
    format!("{device}/m{seq}")
}

/// The id of device `index`.
pub(crate) fn device_id(index: u32) -> String {
    format!("dev-{index:06}")
}

/// What the run acknowledged for one device: verification compares it with Redis.
#[derive(Debug, Default)]
pub(crate) struct Expected {
    /// Messages acknowledged as applied (first deliveries).
    pub(crate) applied: AtomicU64,
    /// Writes acknowledged (each adds one to the version).
    pub(crate) writes: AtomicU64,
    /// Writes whose outcome is unknown (a timeout, a lost connection) and could not be read back.
    pub(crate) uncertain: AtomicU64,
}

impl Expected {
    pub(crate) fn wrote(&self, message: bool) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        if message {
            self.applied.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The run's ledger: one [`Expected`] per device.
#[derive(Debug)]
pub(crate) struct Ledger {
    pub(crate) devices: Vec<Expected>,
}

impl Ledger {
    pub(crate) fn new(devices: u32) -> Self {
        Self {
            devices: (0..devices).map(|_| Expected::default()).collect(),
        }
    }
}

/// xorshift64*: cheap and good enough for choices.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_add(1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_goes_round() {
        assert_eq!(next_status("", 0), ONLINE);
        assert_eq!(next_status(OFFLINE, 99), ONLINE);
        assert_eq!(next_status(ONLINE, 10), OFFLINE);
        assert_eq!(next_status(ONLINE, 50), UPDATING);
        assert_eq!(next_status(UPDATING, 10), ONLINE);
    }

    #[test]
    fn ids_are_stable_per_delivery() {
        assert_eq!(device_id(7), "dev-000007");
        assert_eq!(message_id("dev-000007", 3), message_id("dev-000007", 3));
        assert_ne!(message_id("dev-000007", 3), message_id("dev-000007", 4));
    }

    #[test]
    fn chances_follow_the_rate() {
        let mut rng = Rng::new(1);
        assert!(!(0..1000).any(|_| rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(1.0)));
        let hits = (0..10_000).filter(|_| rng.chance(0.1)).count();
        assert!((500..1500).contains(&hits), "{hits}");
    }
}
