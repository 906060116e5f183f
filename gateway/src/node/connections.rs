//! The connections a listener holds: how many it admits (in total and per source address), and
//! a handle on each one that presented a client certificate, so that a connection whose
//! certificate a newly loaded CRL revokes, or that expires, is closed at once instead of
//! keeping the identity it had at its handshake for as long as the client likes.
//!
//! A connection over a cap is closed right after `accept`, before its TLS handshake: answering
//! it would cost the handshake the cap is there to save. Its client sees the connection closed
//! (gRPC UNAVAILABLE) and retries later; the refusal is counted in
//! `qianlian_limit_hits_total{limit="connections"|"connections_per_source"}`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Context;

use futures::task::AtomicWaker;

use crate::node::crl::{CertId, CrlSet};
use crate::node::metrics::Metrics;

/// The key connections and call rates are counted by: an IPv4 address, or an IPv6 address's
/// /64 (one host's allocation; counting single IPv6 addresses would let one host use 2^64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip {
            IpAddr::V4(v4) => SourceKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    SourceKey(IpAddr::V6(std::net::Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => write!(f, "{a}/64"),
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener holds its maximum number of connections.
    Total,
    /// The source address holds its maximum number of connections.
    PerSource,
}

impl Refused {
    /// The metric label of the limit.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "connections",
            Refused::PerSource => "connections_per_source",
        }
    }
}

/// Tells a connection to close; its I/O fails from then on, which ends it in hyper.
#[derive(Debug, Default)]
pub struct Kill {
    fired: AtomicBool,
    waker: AtomicWaker,
}

impl Kill {
    fn fire(&self) {
        self.fired.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Whether the connection must close; registers the task to be woken when it must.
    pub fn poll_fired(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.fired.load(Ordering::SeqCst)
    }
}

/// A connection that presented a client certificate: what decides whether it may stay open.
#[derive(Debug)]
struct Watched {
    cert: CertId,
    node: bool,
    who: String,
    kill: Arc<Kill>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<SourceKey, usize>,
}

/// The connection caps of one listener and its connections with client certificates.
#[derive(Debug)]
pub struct Gate {
    name: &'static str,
    max_total: usize,
    max_per_source: usize,
    counts: Mutex<Counts>,
    watched: Mutex<HashMap<u64, Watched>>,
    next_id: AtomicU64,
    metrics: Option<Arc<Metrics>>,
    /// Unix second of the last "over the cap" warning: one a second at most, however many.
    last_warning: AtomicI64,
}

impl Gate {
    /// Caps for the listener `name` (in logs: "main", "raft").
    pub fn new(
        name: &'static str,
        max_total: usize,
        max_per_source: usize,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Gate> {
        Arc::new(Gate {
            name,
            max_total,
            max_per_source,
            counts: Mutex::default(),
            watched: Mutex::default(),
            next_id: AtomicU64::new(0),
            metrics,
            last_warning: AtomicI64::new(0),
        })
    }

    /// Admit a connection from `ip`, or say which cap it is over (counted and logged).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let source = SourceKey::of(ip);
        let refused = {
            // Poisoned only by a panic while counting: the counts are still whole.
            let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let mine = c.per_source.get(&source).copied().unwrap_or(0);
            if c.total >= self.max_total {
                Some(Refused::Total)
            } else if mine >= self.max_per_source {
                Some(Refused::PerSource)
            } else {
                c.total += 1;
                *c.per_source.entry(source).or_insert(0) += 1;
                None
            }
        };
        if let Some(r) = refused {
            if let Some(m) = &self.metrics {
                m.limit_hit(r.label());
            }
            let now = crate::node::time::now_unix();
            if self.last_warning.swap(now, Ordering::Relaxed) != now {
                tracing::warn!(
                    listener = self.name,
                    source = %source,
                    limit = r.label(),
                    max_connections = self.max_total,
                    max_connections_per_source = self.max_per_source,
                    "connection refused: over the connection limit (limits.max_connections, limits.max_connections_per_source)"
                );
            }
            return Err(r);
        }
        Ok(Slot {
            gate: self.clone(),
            source,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            kill: Arc::new(Kill::default()),
        })
    }

    fn release(&self, slot: &Slot) {
        {
            let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.per_source.get_mut(&slot.source) {
                *n -= 1;
                if *n == 0 {
                    c.per_source.remove(&slot.source);
                }
            }
        }
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot.id);
    }

    /// Close every connection whose certificate `crls` revokes, that expired by `now`, or,
    /// while the CRLs are out of date, that is not a node's (see `node::tls`). Returns how
    /// many were closed.
    pub fn sweep(&self, crls: &CrlSet, now: i64) -> usize {
        let crl_expired = crls.expired_since(now).is_some();
        let mut closed = Vec::new();
        {
            let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            watched.retain(|_, w| {
                let reason = if crls.revokes(&w.cert) {
                    Some("revoked")
                } else if w.cert.not_after <= now {
                    Some("certificate_expired")
                } else if crl_expired && !w.node {
                    Some("crl_expired")
                } else {
                    None
                };
                match reason {
                    Some(r) => {
                        w.kill.fire();
                        closed.push((r, w.who.clone()));
                        false
                    }
                    None => true,
                }
            });
        }
        for (reason, who) in &closed {
            tracing::warn!(listener = self.name, peer = %who, reason, "closing a connection: its client certificate is no longer acceptable");
            if let Some(m) = &self.metrics {
                m.connection_closed(reason);
            }
        }
        closed.len()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// One admitted connection; releases its place when dropped (the connection closed).
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Gate>,
    source: SourceKey,
    id: u64,
    kill: Arc<Kill>,
}

impl Slot {
    /// Watch this connection's client certificate `cert` (of `who`, a node's when `node`) until
    /// it closes; see [`Gate::sweep`].
    pub fn watch(&self, cert: CertId, node: bool, who: String) {
        self.gate
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                self.id,
                Watched {
                    cert,
                    node,
                    who,
                    kill: self.kill.clone(),
                },
            );
    }

    /// The switch that closes this connection.
    pub fn kill(&self) -> &Kill {
        &self.kill
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_source_and_in_total_and_free_on_drop() {
        let gate = Gate::new("test", 3, 2, None);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = gate.admit(a).expect("first");
        let _a2 = gate.admit(a).expect("second");
        assert_eq!(gate.admit(a).err(), Some(Refused::PerSource));
        let _b1 = gate.admit(b).expect("other source");
        assert_eq!(gate.admit(b).err(), Some(Refused::Total));
        drop(a1);
        assert_eq!(gate.open(), 2);
        gate.admit(a).expect("a place was freed");
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let x: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(SourceKey::of(x), SourceKey::of(y));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(
            SourceKey::of(mapped),
            SourceKey::of("10.0.0.1".parse().expect("ip"))
        );
    }
}
