//! The DNS server of discovery tests: [`modelgate::mock::dns::MockDns`] on 127.0.0.1 with an
//! ephemeral port, records changed at runtime.

pub use modelgate::mock::dns::DnsMode as Mode;

/// A started [`modelgate::mock::dns::MockDns`], with `addr` as a field for config text.
pub struct DnsServer {
    pub addr: std::net::SocketAddr,
    inner: modelgate::mock::dns::MockDns,
}

impl DnsServer {
    /// Start on 127.0.0.1 with no records and `ttl` seconds on every answer.
    pub async fn start(ttl: u32) -> DnsServer {
        let inner = modelgate::mock::dns::MockDns::start(ttl).await.unwrap();
        DnsServer {
            addr: inner.addr(),
            inner,
        }
    }
}

impl std::ops::Deref for DnsServer {
    type Target = modelgate::mock::dns::MockDns;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}
