//! Stream wrappers (`conn::guard::Guarded` on the client side, `proxy::upstream::Coalesce`
//! upstream) hand Pingora's per-stream metadata traits straight to the stream they wrap.

/// Implement `UniqueID`, `Ssl`, `GetTimingDigest`, `GetProxyDigest` and `GetSocketDigest` for
/// `$ty` by delegating to its `inner` field (a `pingora_core::protocols::Stream`).
macro_rules! delegate_stream_digests {
    ($ty:ty) => {
        impl pingora_core::protocols::UniqueID for $ty {
            fn id(&self) -> pingora_core::protocols::UniqueIDType {
                pingora_core::protocols::UniqueID::id(&*self.inner)
            }
        }

        impl pingora_core::protocols::Ssl for $ty {}

        impl pingora_core::protocols::GetTimingDigest for $ty {
            fn get_timing_digest(&self) -> Vec<Option<pingora_core::protocols::TimingDigest>> {
                pingora_core::protocols::GetTimingDigest::get_timing_digest(&*self.inner)
            }
            fn get_read_pending_time(&self) -> std::time::Duration {
                pingora_core::protocols::GetTimingDigest::get_read_pending_time(&*self.inner)
            }
            fn get_write_pending_time(&self) -> std::time::Duration {
                pingora_core::protocols::GetTimingDigest::get_write_pending_time(&*self.inner)
            }
        }

        impl pingora_core::protocols::GetProxyDigest for $ty {
            fn get_proxy_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::raw_connect::ProxyDigest>> {
                pingora_core::protocols::GetProxyDigest::get_proxy_digest(&*self.inner)
            }
            fn set_proxy_digest(
                &mut self,
                digest: pingora_core::protocols::raw_connect::ProxyDigest,
            ) {
                pingora_core::protocols::GetProxyDigest::set_proxy_digest(&mut *self.inner, digest);
            }
        }

        impl pingora_core::protocols::GetSocketDigest for $ty {
            fn get_socket_digest(
                &self,
            ) -> Option<std::sync::Arc<pingora_core::protocols::SocketDigest>> {
                pingora_core::protocols::GetSocketDigest::get_socket_digest(&*self.inner)
            }
            fn set_socket_digest(&mut self, digest: pingora_core::protocols::SocketDigest) {
                pingora_core::protocols::GetSocketDigest::set_socket_digest(
                    &mut *self.inner,
                    digest,
                );
            }
        }
    };
}

pub(crate) use delegate_stream_digests;
