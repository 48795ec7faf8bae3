//! Guessing tokens is slowed to a crawl: a client whose requests were refused as unauthorized too
//! often in a minute is answered 429 until the minute is over.
//!
//! Clients are told apart by their IP address (when the server was started with connection
//! information; in-process routers share one bucket). Tokens themselves are looked up by their
//! SHA-256, so a lookup's time does not depend on how much of a guess was right.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use parking_lot::Mutex;

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Clients tracked at most; past it, expired entries are dropped, then the oldest.
const MAX_CLIENTS: usize = 10_000;

/// Who sent a request: its peer address, or one shared key without connection information.
pub(crate) fn client_of(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// Failed authentications per client in the current window.
#[derive(Debug)]
pub(crate) struct Lockout {
    limit: u32,
    clients: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl Lockout {
    /// Allows `limit` refused requests per client and minute (0 turns the lockout off).
    pub(crate) fn new(limit: u32) -> Self {
        Self {
            limit,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// How long `client` must wait before it may try again, if it is locked out.
    pub(crate) fn locked(&self, client: Option<IpAddr>) -> Option<Duration> {
        self.locked_at(client, Instant::now())
    }

    fn locked_at(&self, client: Option<IpAddr>, now: Instant) -> Option<Duration> {
        if self.limit == 0 {
            return None;
        }
        let clients = self.clients.lock();
        let (started, failures) = clients.get(&client)?;
        let ends = *started + WINDOW;
        (*failures >= self.limit && now < ends).then(|| ends - now)
    }

    /// Counts one refused request of `client`.
    pub(crate) fn failed(&self, client: Option<IpAddr>) {
        self.failed_at(client, Instant::now());
    }

    fn failed_at(&self, client: Option<IpAddr>, now: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut clients = self.clients.lock();
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, (started, _)| now.duration_since(*started) < WINDOW);
            if clients.len() >= MAX_CLIENTS {
                if let Some(oldest) = clients
                    .iter()
                    .min_by_key(|(_, (started, _))| *started)
                    .map(|(k, _)| *k)
                {
                    clients.remove(&oldest);
                }
            }
        }
        let entry = clients.entry(client).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_client_is_locked_after_the_limit_until_the_window_ends() {
        let lockout = Lockout::new(3);
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(lockout.locked_at(a, t0), None);
            lockout.failed_at(a, t0);
        }
        let wait = lockout.locked_at(a, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        // Another client is not affected.
        assert_eq!(lockout.locked_at(b, t0), None);
        // A new window starts fresh.
        let later = t0 + WINDOW;
        assert_eq!(lockout.locked_at(a, later), None);
        lockout.failed_at(a, later);
        assert_eq!(lockout.locked_at(a, later), None);
    }

    #[test]
    fn a_limit_of_zero_never_locks() {
        let lockout = Lockout::new(0);
        for _ in 0..100 {
            lockout.failed(None);
        }
        assert_eq!(lockout.locked(None), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let lockout = Lockout::new(5);
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 50) {
            lockout.failed_at(Some(IpAddr::from(i.to_be_bytes())), t0);
        }
        assert!(lockout.clients.lock().len() <= MAX_CLIENTS);
    }
}
