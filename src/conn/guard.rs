//! [`Guarded`]: a client stream that watches the request header go by (request path).
//!
//! While a request header is arriving (from accept, and again from the first byte after each
//! request ends) every read is scanned for line ends: too many bytes or lines, or a header still
//! incomplete at the deadline, is refused. The guard then answers the JSON 431/408 itself,
//! closes lingering, and only then fails the read, so the app's header read sees an error and
//! answers nothing more. A connection that sends nothing (at accept: for the header timeout;
//! between requests: for the idle timeout) is closed quietly. The scan stops at the blank line
//! that ends the header, so bodies pass untouched.
//!
//! Waiting for a request is [`Peek::try_peek`]: the bytes it reads are kept and served first.
//! Small response writes are held and sent together (header and body in one `send`), and every
//! close the server decides ([`Shutdown`]) lingers, so the client reads the last answer before
//! the connection goes. The guard never looks at what the app writes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::{Peek, Shutdown, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::per_ip::Slot;
use super::{ConnState, Limits};
use crate::error::GatewayError;
use crate::metrics::METRICS;

/// The header limits of one connection (from the snapshot at accept).
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    pub max_bytes: usize,
    pub max_lines: usize,
    pub timeout: Duration,
    /// Longest a kept-alive connection may wait for its next request.
    pub idle: Duration,
}

impl From<&Limits> for HeaderLimits {
    fn from(l: &Limits) -> Self {
        HeaderLimits {
            max_bytes: l.max_header_bytes,
            max_lines: l.max_headers,
            timeout: l.header_timeout,
            idle: l.idle_timeout,
        }
    }
}

/// Why the guard failed a header read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Timeout,
    TooLarge,
    TooMany,
}

impl Verdict {
    fn error(self) -> GatewayError {
        match self {
            Verdict::Timeout => GatewayError::HeaderTimeout,
            Verdict::TooLarge => GatewayError::HeaderTooLarge("request header is too large"),
            Verdict::TooMany => GatewayError::HeaderTooLarge("request has too many header fields"),
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Verdict::Timeout => "header_timeout",
            Verdict::TooLarge => "header_too_large",
            Verdict::TooMany => "too_many_headers",
        }
    }
}

/// Where the close of a refused connection is.
#[derive(Debug, Clone, Copy)]
enum Closing {
    Respond,
    Fin,
    Drain(usize),
}

/// Most bytes read and discarded while closing a refused connection.
const LINGER_BYTES: usize = 8 * 1024 * 1024;
/// Longest a lingering close waits for the client to stop sending.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Scanner state for the header being received.
#[derive(Debug, Default)]
struct HeaderScan {
    bytes: usize,
    lines: usize,
    /// Bytes of the current (unfinished) line.
    line_len: usize,
    /// The current line's last byte so far is `\r`.
    last_cr: bool,
}

impl HeaderScan {
    /// Account `new` bytes. `Ok(Some(n))`: the header ended after `n` of them.
    fn feed(&mut self, new: &[u8], limits: &HeaderLimits) -> Result<Option<usize>, Verdict> {
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', new) {
            let len = self.line_len + (nl - start);
            let cr = if nl > start {
                new.get(nl - 1) == Some(&b'\r')
            } else {
                self.last_cr
            };
            let content = len - usize::from(cr && len > 0);
            start = nl + 1;
            self.line_len = 0;
            self.last_cr = false;
            if content == 0 {
                if self.lines == 0 {
                    // Empty lines before the request line are tolerated (RFC 9112 §2.2).
                    continue;
                }
                self.bytes += start;
                return if self.bytes > limits.max_bytes {
                    Err(Verdict::TooLarge)
                } else {
                    Ok(Some(start))
                };
            }
            self.lines += 1;
            // The request line plus at most `max_lines` fields.
            if self.lines > limits.max_lines + 1 {
                return Err(Verdict::TooMany);
            }
        }
        let rest = new.len() - start;
        if rest > 0 {
            self.line_len += rest;
            self.last_cr = new.last() == Some(&b'\r');
        }
        self.bytes += new.len();
        if self.bytes > limits.max_bytes {
            return Err(Verdict::TooLarge);
        }
        Ok(None)
    }
}

/// The client stream of one connection on the public listener.
pub struct Guarded {
    inner: Stream,
    state: Arc<ConnState>,
    limits: HeaderLimits,
    /// The `Server` header of the guard's own refusals.
    server: Option<Arc<str>>,
    /// A header is being received (scan the reads).
    in_header: bool,
    /// Between requests: no byte of the next one yet (`deadline` is the idle timeout).
    idle: bool,
    scan: HeaderScan,
    /// When the wait for a request, or its header, must be over (`None`: body phase).
    deadline: Option<Instant>,
    /// One timer per connection, reset to `deadline` only when a read is about to wait: a read
    /// that completes at once costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
    timer_at: Option<Instant>,
    verdict: Option<Verdict>,
    /// The answer to a refused header; `(bytes, written)`.
    refusal: Option<(Vec<u8>, usize)>,
    /// Closing after a refused header: answer, FIN, drain (bounded by the timer).
    closing: Option<(Closing, Pin<Box<Sleep>>)>,
    /// The lingering close was done.
    lingered: bool,
    /// Bytes read while waiting for a request (served to Pingora first); `(bytes, consumed)`.
    prefix: Option<(Vec<u8>, usize)>,
    /// Response bytes not yet sent, so a small response's header and body leave in one `send`
    /// (what Pingora's L4 write buffer did). Allocated for a response and released when the
    /// connection waits for its next request: an idle connection holds no write buffer.
    out: Vec<u8>,
    /// Bytes of `out` already sent.
    out_sent: usize,
    _slot: Option<Slot>,
}

/// Most response bytes held back before they are sent: one MSS on a 1500-byte MTU, Pingora's
/// `DEFAULT_L4_WRITE_BUFFER_SIZE`. A write that does not fit leaves at once, with what is held.
const OUT_CAP: usize = 1460;

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .field("in_header", &self.in_header)
            .field("verdict", &self.verdict)
            .finish()
    }
}

impl Guarded {
    pub fn new(
        inner: Stream,
        state: Arc<ConnState>,
        limits: HeaderLimits,
        server: Option<Arc<str>>,
        slot: Option<Slot>,
    ) -> Self {
        Guarded {
            inner,
            state,
            limits,
            server,
            in_header: true,
            idle: false,
            scan: HeaderScan::default(),
            // The first header's clock starts at accept: a connection that sends nothing is
            // closed after `header_timeout_ms` too.
            deadline: Some(Instant::now() + limits.timeout),
            timer: None,
            timer_at: None,
            verdict: None,
            refusal: None,
            closing: None,
            lingered: false,
            prefix: None,
            out: Vec::new(),
            out_sent: 0,
            _slot: slot,
        }
    }

    /// Wait until the client has sent something, reading it into `prefix` (served to Pingora
    /// first, so this costs no extra system call). `Ready(false)`: the client closed or the
    /// read failed. The read buffer lives on the stack of this poll only, never in the
    /// connection's future: an idle connection holds no buffer.
    ///
    /// Also `Ready(false)` once the wait is over its deadline: `header_timeout_ms` from accept for
    /// a connection's first request, `idle_timeout_ms` from the end of the previous one.
    fn poll_request_bytes(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        self.rearm_if_asked();
        if self.prefix.is_some() {
            return Poll::Ready(true);
        }
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut buf = ReadBuf::uninit(&mut stack);
        match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                self.prefix = Some((buf.filled().to_vec(), 0));
                self.request_begins();
                Poll::Ready(true)
            }
            Poll::Ready(_) => Poll::Ready(false),
            Poll::Pending if self.deadline_passed(cx) => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    }

    /// A request ended (the proxy said so): the next one may idle for `idle_timeout_ms`.
    fn rearm_if_asked(&mut self) {
        if self.state.take_rearm() {
            self.in_header = true;
            self.idle = true;
            self.scan = HeaderScan::default();
            self.deadline = Some(Instant::now() + self.limits.idle);
            if self.out.is_empty() {
                self.out = Vec::new();
            }
        }
    }

    /// Send what `out` holds.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        crate::io_wrap::poll_send_held(&mut self.inner, &mut self.out, &mut self.out_sent, cx)
    }

    /// Write `bufs` behind what `out` holds: held back while they fit in [`OUT_CAP`], else sent
    /// together with the held bytes in one `writev` (a response header and a large body leave
    /// in one call, as nginx does). Returns how much of `bufs` was taken.
    fn poll_write_behind(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        /// Slices one `writev` carries here: the held bytes plus Pingora's pieces (a chunk is
        /// size line, data, CRLF).
        const SLICES: usize = 8;
        let len = bufs.iter().map(|b| b.len()).sum();
        if self.out.len() + len <= OUT_CAP {
            if self.out.capacity() == 0 {
                self.out.reserve_exact(OUT_CAP);
            }
            for b in bufs {
                self.out.extend_from_slice(b);
            }
            return Poll::Ready(Ok(len));
        }
        loop {
            let held = self.out.get(self.out_sent..).unwrap_or_default();
            if held.is_empty() {
                self.out.clear();
                self.out_sent = 0;
                return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            }
            if bufs.len() >= SLICES {
                std::task::ready!(self.poll_out(cx))?;
                continue;
            }
            let mut slices = [io::IoSlice::new(&[]); SLICES];
            slices[0] = io::IoSlice::new(held);
            for (slot, b) in slices[1..].iter_mut().zip(bufs) {
                *slot = io::IoSlice::new(b);
            }
            let held_len = held.len();
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write_vectored(cx, &slices[..=bufs.len()])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_held = n.min(held_len);
            self.out_sent += from_held;
            if n > from_held {
                self.out.clear();
                self.out_sent = 0;
                return Poll::Ready(Ok(n - from_held));
            }
        }
    }

    /// The first bytes of a request arrived: its header has `header_timeout_ms` from now.
    fn request_begins(&mut self) {
        if self.idle {
            self.idle = false;
            self.deadline = Some(Instant::now() + self.limits.timeout);
        }
    }

    /// Whether `deadline` has passed; if not, this task is woken when it does.
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.deadline else {
            return false;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if self.timer_at != Some(at) {
            timer.as_mut().reset(at);
            self.timer_at = Some(at);
        }
        timer.as_mut().poll(cx).is_ready()
    }

    /// Copy from `prefix` into `buf`; true if anything was copied.
    fn serve_prefix(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let Some((bytes, consumed)) = &mut self.prefix else {
            return false;
        };
        let rest = bytes.get(*consumed..).unwrap_or_default();
        let n = rest.len().min(buf.remaining());
        buf.put_slice(rest.get(..n).unwrap_or_default());
        *consumed += n;
        if *consumed >= bytes.len() {
            self.prefix = None;
        }
        n > 0
    }

    /// Refuse the header: the read that found out answers, closes and lingers before failing.
    fn fail(&mut self, verdict: Verdict) {
        self.verdict = Some(verdict);
        self.in_header = false;
        self.deadline = None;
        METRICS
            .connections_rejected
            .with_label_values(&[verdict.reason()])
            .inc();
        self.refusal = Some((raw_response(&verdict.error(), self.server.as_deref()), 0));
        self.closing = Some((Closing::Respond, Box::pin(tokio::time::sleep(LINGER_TIME))));
    }

    /// Drive the close of a refused connection; `Ready` when done (the read then fails).
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some((_, timer)) = self.closing.as_mut() else {
            return Poll::Ready(());
        };
        if timer.as_mut().poll(cx).is_ready() {
            self.closing = None;
            self.lingered = true;
            return Poll::Ready(());
        }
        loop {
            let Some((stage, _)) = self.closing.as_mut() else {
                return Poll::Ready(());
            };
            let next = match *stage {
                Closing::Respond => match self.poll_refusal(cx) {
                    Poll::Ready(Ok(())) => Some(Closing::Fin),
                    Poll::Ready(Err(_)) => None,
                    Poll::Pending => return Poll::Pending,
                },
                Closing::Fin => match Pin::new(&mut self.inner).poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => Some(Closing::Drain(0)),
                    Poll::Ready(Err(_)) => None,
                    Poll::Pending => return Poll::Pending,
                },
                Closing::Drain(drained) => {
                    let mut sink = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut sink);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            let drained = drained + buf.filled().len();
                            (drained < LINGER_BYTES).then_some(Closing::Drain(drained))
                        }
                        Poll::Ready(_) => None,
                        Poll::Pending => return Poll::Pending,
                    }
                }
            };
            match (next, self.closing.as_mut()) {
                (Some(n), Some((stage, _))) => *stage = n,
                _ => {
                    self.closing = None;
                    self.lingered = true;
                    return Poll::Ready(());
                }
            }
        }
    }

    /// Write out the refusal. `Ready(Ok)` once all of it is written.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.refusal {
            let Some(rest) = bytes.get(*written..).filter(|r| !r.is_empty()) else {
                break;
            };
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Lingering close (as nginx does): after an error response, stop writing and read what the
/// client is still sending, for a bounded time and amount, so closing with unread data does not
/// reset the connection before the client has read why.
pub async fn linger(stream: &mut Stream) {
    use tokio::io::AsyncReadExt;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        AsyncWriteExt::shutdown(stream).await?;
        // On the heap: a buffer here would be part of every connection's future.
        let mut sink = vec![0u8; 8192];
        let mut drained = 0usize;
        while drained < 8 * 1024 * 1024 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), io::Error>(())
    })
    .await;
}

/// `HTTP/1.1 <status>` response bytes for `error`, closing the connection.
pub fn raw_response(error: &GatewayError, server: Option<&str>) -> Vec<u8> {
    let (mut header, body) = error.response(None);
    if let Some(server) = server {
        let _ = header.insert_header("server", server);
    }
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(header.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        header
            .status
            .canonical_reason()
            .unwrap_or("Error")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in header.headers.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    out
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(v) = this.verdict {
            return match this.poll_closing(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::other(v.reason()))),
                Poll::Pending => Poll::Pending,
            };
        }
        this.rearm_if_asked();
        let before = buf.filled().len();
        let res = if this.serve_prefix(buf) {
            Poll::Ready(Ok(()))
        } else {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        };
        if !this.in_header {
            return res;
        }
        match res {
            Poll::Ready(Ok(())) => {
                let new = buf.filled().get(before..).unwrap_or_default();
                if !new.is_empty() {
                    this.request_begins();
                }
                match this.scan.feed(new, &this.limits) {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        this.in_header = false;
                        this.deadline = None;
                    }
                    Err(v) => {
                        // The bytes are not handed to Pingora: it sees a failed read once the
                        // answer is out.
                        buf.set_filled(before);
                        this.fail(v);
                        return self.poll_read(cx, buf);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.deadline_passed(cx) => {
                if this.idle || this.scan.bytes == 0 {
                    // Nothing of a request arrived: close quietly (end of stream).
                    this.in_header = false;
                    this.deadline = None;
                    return Poll::Ready(Ok(()));
                }
                this.fail(Verdict::Timeout);
                self.poll_read(cx, buf)
            }
            other => other,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_behind(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_behind(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_out(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_out(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Guarded {
    /// The server ends the connection (its last response said `Connection: close`, or the app
    /// refused the request): send what is held, then close lingering so the client reads the
    /// answer before the connection goes.
    async fn shutdown(&mut self) {
        if !self.out.is_empty() {
            // Response bytes still held: send them first (bounded).
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                std::future::poll_fn(|cx| self.poll_out(cx)).await
            })
            .await;
        }
        if !std::mem::replace(&mut self.lingered, true) {
            linger(&mut self.inner).await;
        }
        Shutdown::shutdown(&mut *self.inner).await;
    }
}

crate::io_wrap::delegate_stream_digests!(Guarded);

#[async_trait]
impl Peek for Guarded {
    /// How the keep-alive loop waits for a request: until the client sends something (the
    /// bytes are kept and served to the next reads first), at most until the guard's deadline
    /// (`header_timeout_ms` from accept for a connection's first request, `idle_timeout_ms`
    /// from the end of the previous one). `Ok(true)` with the first bytes copied into `buf`;
    /// `Ok(false)`: the client closed, the read failed or the deadline passed.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if !std::future::poll_fn(|cx| self.poll_request_bytes(cx)).await {
            return Ok(false);
        }
        if let Some((bytes, consumed)) = &self.prefix {
            let rest = bytes.get(*consumed..).unwrap_or_default();
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: HeaderLimits = HeaderLimits {
        max_bytes: 200,
        max_lines: 3,
        timeout: Duration::from_secs(1),
        idle: Duration::from_secs(1),
    };

    fn feed_all(pieces: &[&[u8]]) -> Result<Option<usize>, Verdict> {
        let mut s = HeaderScan::default();
        for p in pieces {
            if let Some(n) = s.feed(p, &L)? {
                return Ok(Some(n));
            }
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_of_the_header_across_reads() {
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        assert_eq!(feed_all(&[req]), Ok(Some(req.len() - 4)));
        for split in 1..req.len() {
            let (a, b) = req.split_at(split);
            let got = feed_all(&[a, b]);
            assert!(matches!(got, Ok(Some(_))), "split {split}: {got:?}");
        }
        // Bare LF line ends, and empty lines before the request line.
        assert!(matches!(
            feed_all(&[b"\r\n\r\nGET / HTTP/1.1\nHost: x\n\n"]),
            Ok(Some(_))
        ));
        assert_eq!(feed_all(&[b"GET / HTTP/1.1\r\nHost: x\r\n"]), Ok(None));
    }

    #[test]
    fn counts_bytes_and_lines() {
        let many = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n";
        assert_eq!(feed_all(&[many]), Err(Verdict::TooMany));
        let three = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        assert!(matches!(feed_all(&[three]), Ok(Some(_))));
        let long = [b'x'; 300];
        assert_eq!(feed_all(&[b"GET /", &long]), Err(Verdict::TooLarge));
        // Body bytes after the header do not count.
        let mut with_body = three.to_vec();
        with_body.extend_from_slice(&[b'y'; 500]);
        assert!(matches!(feed_all(&[&with_body]), Ok(Some(_))));
    }

    #[test]
    fn raw_response_is_a_complete_json_response() {
        let r = raw_response(&GatewayError::HeaderTimeout, Some("modelgate"));
        let text = String::from_utf8(r).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{text}"
        );
        assert!(text.contains("server: modelgate\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "request_timeout");
    }
}
