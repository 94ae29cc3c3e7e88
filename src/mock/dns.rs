//! A tiny authoritative DNS server (UDP) for discovery tests and the scale load test: A, AAAA
//! and SRV records that change at runtime (setters, or a zone file), one TTL for every answer,
//! and failure modes (SERVFAIL, no answer at all).
//!
//! Test infrastructure like the rest of [`crate::mock`]; the gateway never uses it. Built on
//! hickory-proto's message codec (re-exported by hickory-resolver, which the gateway uses for
//! discovery). Runs on the tokio runtime that starts it; dropping the server stops it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// Answer from the records (NXDOMAIN for unknown names).
    Answer,
    /// SERVFAIL to everything.
    ServFail,
    /// Read queries and never answer (a dead server).
    Silent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Zone {
    addrs: HashMap<String, Vec<IpAddr>>,
    srv: HashMap<String, Vec<(u16, String)>>,
    ttl: u32,
    mode: DnsMode,
}

/// A running server; dropping it stops it.
pub struct MockDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// Names compare lowercase and absolute.
fn key(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

impl MockDns {
    /// Start on 127.0.0.1 (kernel-chosen port) with no records and `ttl` seconds on every
    /// answer.
    pub async fn start(ttl: u32) -> io::Result<MockDns> {
        MockDns::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), ttl).await
    }

    /// Start on `addr`.
    pub async fn start_on(addr: SocketAddr, ttl: u32) -> io::Result<MockDns> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        let zone = Arc::new(Mutex::new(Zone {
            addrs: HashMap::new(),
            srv: HashMap::new(),
            ttl,
            mode: DnsMode::Answer,
        }));
        let queries = Arc::new(AtomicUsize::new(0));
        let (z, q) = (Arc::clone(&zone), Arc::clone(&queries));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                let reply = answer(&lock(&z), &query);
                if let Some(bytes) = reply.and_then(|m| m.to_vec().ok()) {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Ok(MockDns {
            addr,
            zone,
            queries,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the A/AAAA records of `name`.
    pub fn set_addrs(&self, name: &str, ips: &[IpAddr]) {
        lock(&self.zone).addrs.insert(key(name), ips.to_vec());
    }

    /// Replace the SRV records of `name`: (port, target) pairs.
    pub fn set_srv(&self, name: &str, records: &[(u16, &str)]) {
        let list = records.iter().map(|(p, t)| (*p, key(t))).collect();
        lock(&self.zone).srv.insert(key(name), list);
    }

    pub fn set_mode(&self, mode: DnsMode) {
        lock(&self.zone).mode = mode;
    }

    pub fn set_ttl(&self, ttl: u32) {
        lock(&self.zone).ttl = ttl;
    }

    /// Replace every record (and the TTL, if the text sets one) with a zone text: one record
    /// per line, `NAME A IP`, `NAME AAAA IP`, `NAME SRV PORT TARGET`, or `ttl SECONDS`; `#`
    /// starts a comment. Returns whether anything changed.
    pub fn load_zone(&self, text: &str) -> Result<bool, String> {
        let mut zone = lock(&self.zone);
        let mut next = Zone {
            addrs: HashMap::new(),
            srv: HashMap::new(),
            ttl: zone.ttl,
            mode: zone.mode,
        };
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default();
            let words: Vec<&str> = line.split_whitespace().collect();
            let bad = || format!("zone line {}: {line:?}", i + 1);
            match words.as_slice() {
                [] => {}
                ["ttl", secs] => next.ttl = secs.parse().map_err(|_| bad())?,
                [name, "A" | "AAAA", ip] => next
                    .addrs
                    .entry(key(name))
                    .or_default()
                    .push(ip.parse().map_err(|_| bad())?),
                [name, "SRV", port, target] => next
                    .srv
                    .entry(key(name))
                    .or_default()
                    .push((port.parse().map_err(|_| bad())?, key(target))),
                _ => return Err(bad()),
            }
        }
        let changed = *zone != next;
        *zone = next;
        Ok(changed)
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for MockDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The zone holds plain data: a panic while it was locked leaves nothing half-updated.
fn lock(zone: &Mutex<Zone>) -> MutexGuard<'_, Zone> {
    zone.lock().unwrap_or_else(|e| e.into_inner())
}

fn answer(zone: &Zone, query: &Message) -> Option<Message> {
    if zone.mode == DnsMode::Silent {
        return None;
    }
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(query.recursion_desired());
    let Some(q) = query.queries().first() else {
        m.set_response_code(ResponseCode::FormErr);
        return Some(m);
    };
    m.add_query(q.clone());
    if zone.mode == DnsMode::ServFail {
        m.set_response_code(ResponseCode::ServFail);
        return Some(m);
    }
    let name = key(&q.name().to_ascii());
    let owner = q.name().clone();
    if !zone.addrs.contains_key(&name) && !zone.srv.contains_key(&name) {
        m.set_response_code(ResponseCode::NXDomain);
        return Some(m);
    }
    let rdatas: Vec<RData> = match q.query_type() {
        RecordType::A | RecordType::AAAA => zone
            .addrs
            .get(&name)
            .into_iter()
            .flatten()
            .filter_map(|ip| match (ip, q.query_type()) {
                (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(*v6))),
                _ => None,
            })
            .collect(),
        RecordType::SRV => zone
            .srv
            .get(&name)
            .into_iter()
            .flatten()
            .filter_map(|(port, target)| {
                let target = Name::from_ascii(target).ok()?;
                Some(RData::SRV(SRV::new(10, 10, *port, target)))
            })
            .collect(),
        _ => Vec::new(),
    };
    for rdata in rdatas {
        m.add_answer(Record::from_rdata(owner.clone(), zone.ttl, rdata));
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_zone_text_replaces_the_records_and_reports_changes() {
        let dns = MockDns::start(30).await.unwrap();
        let text = "ttl 1\nsvc.test A 127.0.0.1 # one\nsvc.test AAAA ::1\n_h._tcp.svc.test SRV 8000 svc.test.\n";
        assert_eq!(dns.load_zone(text), Ok(true));
        assert_eq!(dns.load_zone(text), Ok(false));
        {
            let z = lock(&dns.zone);
            assert_eq!(z.ttl, 1);
            assert_eq!(z.addrs["svc.test."].len(), 2);
            assert_eq!(
                z.srv["_h._tcp.svc.test."],
                vec![(8000, "svc.test.".to_string())]
            );
        }
        let err = dns.load_zone("svc.test A nowhere\n").unwrap_err();
        assert!(err.contains("zone line 1"), "{err}");
        assert_eq!(dns.load_zone(""), Ok(true));
        assert!(lock(&dns.zone).addrs.is_empty());
    }
}
