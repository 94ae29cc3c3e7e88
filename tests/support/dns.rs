//! A tiny authoritative DNS server on 127.0.0.1 (UDP, ephemeral port) for discovery tests:
//! A, AAAA and SRV records that a test changes at runtime, a TTL, and failure modes (SERVFAIL,
//! no answer at all). Built on hickory-proto's message codec; runs on the test's runtime.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer from the records (NXDOMAIN for unknown names).
    Answer,
    /// SERVFAIL to everything.
    ServFail,
    /// Read queries and never answer (a dead server).
    Silent,
}

#[derive(Debug)]
struct Zone {
    addrs: HashMap<String, Vec<IpAddr>>,
    srv: HashMap<String, Vec<(u16, String)>>,
    ttl: u32,
    mode: Mode,
}

/// A running server; dropping it stops it.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

fn key(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

impl DnsServer {
    /// Start on 127.0.0.1 with no records and `ttl` seconds on every answer.
    pub async fn start(ttl: u32) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone {
            addrs: HashMap::new(),
            srv: HashMap::new(),
            ttl,
            mode: Mode::Answer,
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
                let reply = answer(&z.lock().unwrap(), &query);
                if let Some(bytes) = reply.and_then(|m| m.to_vec().ok()) {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        DnsServer {
            addr,
            zone,
            queries,
            task,
        }
    }

    /// Replace the A/AAAA records of `name`.
    pub fn set_addrs(&self, name: &str, ips: &[IpAddr]) {
        self.zone
            .lock()
            .unwrap()
            .addrs
            .insert(key(name), ips.to_vec());
    }

    /// Replace the SRV records of `name`: (port, target) pairs.
    pub fn set_srv(&self, name: &str, records: &[(u16, &str)]) {
        let list = records.iter().map(|(p, t)| (*p, key(t))).collect();
        self.zone.lock().unwrap().srv.insert(key(name), list);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.zone.lock().unwrap().mode = mode;
    }

    pub fn set_ttl(&self, ttl: u32) {
        self.zone.lock().unwrap().ttl = ttl;
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(zone: &Zone, query: &Message) -> Option<Message> {
    if zone.mode == Mode::Silent {
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
    if zone.mode == Mode::ServFail {
        m.set_response_code(ResponseCode::ServFail);
        return Some(m);
    }
    let name = key(&q.name().to_ascii());
    let owner = q.name().clone();
    let known = zone.addrs.contains_key(&name) || zone.srv.contains_key(&name);
    if !known {
        m.set_response_code(ResponseCode::NXDomain);
        return Some(m);
    }
    match q.query_type() {
        RecordType::A | RecordType::AAAA => {
            for ip in zone.addrs.get(&name).into_iter().flatten() {
                let rdata = match (ip, q.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                m.add_answer(Record::from_rdata(owner.clone(), zone.ttl, rdata));
            }
        }
        RecordType::SRV => {
            for (port, target) in zone.srv.get(&name).into_iter().flatten() {
                let target = Name::from_ascii(target).unwrap();
                let rdata = RData::SRV(SRV::new(10, 10, *port, target));
                m.add_answer(Record::from_rdata(owner.clone(), zone.ttl, rdata));
            }
        }
        _ => {}
    }
    Some(m)
}
