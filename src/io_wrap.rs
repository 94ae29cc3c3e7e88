//! Stream wrappers (`conn::guard::Guarded` on the client side, `proxy::upstream::Coalesce`
//! upstream) hand Pingora's per-stream metadata traits straight to the stream they wrap, and
//! send the bytes they held back with [`poll_send_held`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pingora_core::protocols::Stream;
use tokio::io::AsyncWrite;

/// Write `held[*sent..]` to `inner`, advancing `sent`; once all is out, empty `held` (keeping
/// its capacity) and reset `sent`.
pub fn poll_send_held(
    inner: &mut Stream,
    held: &mut Vec<u8>,
    sent: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while let Some(rest) = held.get(*sent..).filter(|r| !r.is_empty()) {
        match Pin::new(&mut *inner).poll_write(cx, rest) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => *sent += n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    held.clear();
    *sent = 0;
    Poll::Ready(Ok(()))
}

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
