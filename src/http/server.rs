//! Tessera's accept loop: HTTP/1.1 over hyper with the connection rules `axum::serve` lacks.
//!
//! Each listener runs [`serve`], over plain TCP or over TLS ([`Transport`], docs/tls.md). Per
//! listener and per connection it enforces (docs/operating.md, "Connections and timeouts"):
//!
//! - **Header timeout.** A connection must deliver a request's complete headers within
//!   `header_timeout` of its first byte (of being accepted, for its first request; on a TLS
//!   listener the handshake counts toward that, so a slow handshake cannot hold a slot longer).
//!   Otherwise it is closed without a response: the request line may not even be known, and a
//!   client this slow is more likely an attack than a peer that would read an answer.
//! - **Body timeout.** A request body must arrive whole within `body_timeout` of its headers.
//!   The body then fails with [`BodyTimeout`]; the OAuth endpoints and the admin API answer
//!   `408` with `Connection: close`, in their error shape.
//! - **Idle timeout.** A kept-alive connection that sends no new byte for `idle_timeout` after
//!   its last response is closed.
//! - **Connection cap.** A listener holds at most `max_connections` open connections. Past it,
//!   a new connection is accepted and closed at once (no response), so that the kernel's backlog
//!   does not fill with connections that would wait, unanswered, for a slot; the ones already
//!   open keep being served, and new ones are again once the count is below the cap. Each
//!   listener has its own cap, so a full public listener does not lock the operator out of the
//!   admin one.
//! - **Accept errors.** An error from `accept` that is about the listener or the process (out
//!   of descriptors: `EMFILE`, `ENFILE`; out of memory) pauses accepting for
//!   [`ACCEPT_BACKOFF`] and is logged at most once per [`WARN_EVERY`]; the listener keeps going.
//!   Errors about one connection (reset or aborted before it was accepted) are skipped.
//!
//! The header and idle timeouts are checked by each connection's task every [`tick`] (a quarter
//! of the shorter timeout, at most a second), so a connection is closed between the timeout and
//! the timeout plus one tick. A request being handled is never cut off by them.
//!
//! On a TLS listener, the client certificate a connection presented is added to each of its
//! requests as a [`ClientCertificate`] extension; with a trusted proxy header configured,
//! requests from the proxies' addresses get it from that header instead (and the header is
//! removed from every request, trusted or not).
//!
//! Shutdown: once `stop` turns true, the listener stops accepting and closes, every connection
//! is told to finish (hyper answers the request in flight, then closes; an idle connection closes
//! at once), and [`serve`] returns when the last one has.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::tls::{ClientCertificate, ProxyCert, ProxyCertHeader, Tls};

/// How long a listener stops accepting after an error that is not about one connection.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning per listener in this time for accept errors, and one for connections
/// refused at the cap; each says how many happened since the last.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Descriptors the automatic public cap leaves for everything that is not a connection: the
/// database files, logs, key files, the runtime's own.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// Largest automatic public connection cap.
pub const AUTO_MAX_CONNECTIONS: u64 = 1024;

/// The connection rules of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Time to receive a request's headers.
    pub header_timeout: Duration,
    /// Time to receive a request's body, from its headers.
    pub body_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// How a listener's connections are carried: TLS or not, and where client certificates come
/// from.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// TLS, when the listener has a certificate.
    pub tls: Option<Arc<Tls>>,
    /// The trusted proxy header carrying the client certificate, when configured.
    pub cert_header: Option<Arc<ProxyCertHeader>>,
}

/// How often a connection checks its header and idle timeouts.
#[must_use]
pub fn tick(rules: &Rules) -> Duration {
    (rules.header_timeout.min(rules.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// The public listener's cap: `configured`, or when that is 0, [`AUTO_MAX_CONNECTIONS`] or what
/// the process's descriptor limit leaves after the admin cap, the database connections and
/// [`RESERVED_DESCRIPTORS`], whichever is smaller (at least 1).
#[must_use]
pub fn public_cap(
    configured: usize,
    admin_cap: usize,
    database: u32,
    nofile: Option<u64>,
) -> usize {
    if configured > 0 {
        return configured;
    }
    let Some(limit) = nofile else {
        return usize::try_from(AUTO_MAX_CONNECTIONS).unwrap_or(usize::MAX);
    };
    let reserved = (admin_cap as u64)
        .saturating_add(u64::from(database))
        .saturating_add(RESERVED_DESCRIPTORS);
    let cap = limit
        .saturating_sub(reserved)
        .clamp(1, AUTO_MAX_CONNECTIONS);
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// The soft limit on open descriptors (`RLIMIT_NOFILE`), from `/proc/self/limits`; `None` where
/// that file does not exist or says "unlimited".
#[must_use]
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A request body that did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {} s", .0.as_secs())]
pub struct BodyTimeout(Duration);

/// The [`BodyTimeout`] in `err`'s chain of causes, if any.
#[must_use]
pub fn body_timeout_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimeout> {
    std::iter::successors(Some(err), |e| e.source()).find_map(|e| e.downcast_ref::<BodyTimeout>())
}

/// Serves `router` on `listener` under `rules` until `stop` turns true (or its sender is
/// dropped), then lets every connection finish (see the module docs). `name` labels metrics
/// and logs.
pub async fn serve(
    listener: TcpListener,
    name: &'static str,
    router: Router,
    rules: Rules,
    transport: Transport,
    mut stop: watch::Receiver<bool>,
) {
    // Every connection task holds a clone of `open_rx`; `open_tx.closed()` is the moment the
    // last one ended.
    let (open_tx, open_rx) = watch::channel(());
    let open = Arc::new(AtomicUsize::new(0));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer starts as soon as a connection waits for a request, so it
    // would also close idle kept-alive connections; the connection task times both instead.
    builder.header_read_timeout(None);
    let service = TowerToHyperService::new(router);
    let mut accept_errors = RateLimitedWarning::default();
    let mut refusals = RateLimitedWarning::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if open.load(Ordering::Relaxed) >= rules.max_connections {
                    drop(stream);
                    metrics::counter!("tessera_http_connections_refused_total", "listener" => name)
                        .increment(1);
                    refusals.note(|n| {
                        tracing::warn!(
                            listener = name,
                            max_connections = rules.max_connections,
                            refused = n,
                            "connection cap reached: closing new connections at once"
                        );
                    });
                    continue;
                }
                let held = OpenConnection::new(open.clone(), name);
                let conn = Connection {
                    peer,
                    name,
                    rules,
                    builder: builder.clone(),
                    service: service.clone(),
                    transport: transport.clone(),
                };
                tokio::spawn(conn.run(stream, stop.clone(), open_rx.clone(), held));
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                metrics::counter!("tessera_http_accept_errors_total", "listener" => name)
                    .increment(1);
                accept_errors.note(|n| {
                    tracing::warn!(
                        listener = name,
                        error = %e,
                        errors = n,
                        backoff_ms = ACCEPT_BACKOFF.as_millis(),
                        "accepting connections failed; pausing before the next attempt"
                    );
                });
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}

/// Errors about one connection, which went away before it was accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A warning logged at most once per [`WARN_EVERY`], with the count of occurrences since the
/// last one.
#[derive(Default)]
struct RateLimitedWarning {
    last: Option<Instant>,
    since: u64,
}

impl RateLimitedWarning {
    fn note(&mut self, warn: impl FnOnce(u64)) {
        self.since = self.since.saturating_add(1);
        if self.last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            warn(self.since);
            self.since = 0;
            self.last = Some(Instant::now());
        }
    }
}

/// Counts a connection as open (for the cap and the gauge) while it lives.
struct OpenConnection {
    open: Arc<AtomicUsize>,
    name: &'static str,
}

impl OpenConnection {
    fn new(open: Arc<AtomicUsize>, name: &'static str) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("tessera_http_connections", "listener" => name).increment(1.0);
        Self { open, name }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("tessera_http_connections", "listener" => self.name).decrement(1.0);
    }
}

/// One accepted connection, before it is served.
struct Connection {
    peer: SocketAddr,
    name: &'static str,
    rules: Rules,
    builder: hyper::server::conn::http1::Builder,
    service: TowerToHyperService<Router>,
    transport: Transport,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        mut stop: watch::Receiver<bool>,
        _open: watch::Receiver<()>,
        _held: OpenConnection,
    ) {
        // Started before any TLS handshake, so that the first request's header timeout covers
        // the handshake too.
        let activity = Arc::new(Activity::new());
        let Some(tls) = self.transport.tls.clone() else {
            self.serve(stream, activity, None, stop).await;
            return;
        };
        let peer = self.peer;
        let handshake = tls.acceptor().accept(stream);
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            accepted = tokio::time::timeout(self.rules.header_timeout, handshake) => accepted,
        };
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                metrics::counter!("tessera_tls_handshake_failures_total", "listener" => self.name)
                    .increment(1);
                tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics::counter!(
                    "tessera_http_connections_timed_out_total",
                    "listener" => self.name,
                    "timeout" => "header"
                )
                .increment(1);
                tracing::debug!(peer = %peer, "closing a connection whose TLS handshake did not finish within the header timeout");
                return;
            }
        };
        let cert = super::tls::peer_certificate(stream.get_ref().1);
        if let Some(c) = &cert {
            tracing::debug!(
                peer = %peer,
                sha256 = %crate::domain::crypto::hex(&c.sha256()),
                "TLS client certificate presented"
            );
        }
        self.serve(stream, activity, cert.map(Arc::new), stop).await;
    }

    /// Serves HTTP/1.1 on `stream` (the socket, or the TLS stream over it) until the
    /// connection ends, a timeout closes it, or shutdown has let it finish.
    async fn serve<S>(
        self,
        stream: S,
        activity: Arc<Activity>,
        client_cert: Option<Arc<ClientCertificate>>,
        mut stop: watch::Receiver<bool>,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(TrackedStream {
            stream,
            activity: activity.clone(),
        });
        let service = ConnService {
            inner: self.service,
            peer: self.peer,
            activity: activity.clone(),
            body_timeout: self.rules.body_timeout,
            client_cert,
            cert_header: self.transport.cert_header,
        };
        let conn = self.builder.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut tick = tokio::time::interval(tick(&self.rules));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tick.tick() => {
                    if let Some(timeout) = activity.expired(&self.rules) {
                        metrics::counter!(
                            "tessera_http_connections_timed_out_total",
                            "listener" => self.name,
                            "timeout" => timeout
                        )
                        .increment(1);
                        tracing::debug!(peer = %self.peer, timeout, "closing a connection past its timeout");
                        break;
                    }
                }
            }
        }
    }
}

/// What a connection is doing, and since when: one word, so the connection's task reads a
/// consistent pair. The top two bits are the phase, the rest milliseconds since `started`.
struct Activity {
    started: Instant,
    state: AtomicU64,
}

/// Waiting for a request's headers (from the first byte, or from the accept).
const HEAD: u64 = 0;
/// A request is being handled.
const BUSY: u64 = 1;
/// Waiting for the next request on a kept-alive connection.
const IDLE: u64 = 2;
const PHASE_SHIFT: u32 = 62;
const SINCE_MASK: u64 = (1 << PHASE_SHIFT) - 1;

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            state: AtomicU64::new(HEAD << PHASE_SHIFT),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(SINCE_MASK) & SINCE_MASK
    }

    fn enter(&self, phase: u64) {
        self.state
            .store((phase << PHASE_SHIFT) | self.now(), Ordering::Relaxed);
    }

    fn phase(&self) -> u64 {
        self.state.load(Ordering::Relaxed) >> PHASE_SHIFT
    }

    /// Bytes arrived: on an idle connection, they start the next request's header timeout.
    fn bytes_arrived(&self) {
        if self.phase() == IDLE {
            self.enter(HEAD);
        }
    }

    /// The timeout (`"header"` or `"idle"`) the connection has passed, if any.
    fn expired(&self, rules: &Rules) -> Option<&'static str> {
        let state = self.state.load(Ordering::Relaxed);
        let waited = Duration::from_millis(self.now().saturating_sub(state & SINCE_MASK));
        match state >> PHASE_SHIFT {
            HEAD if waited >= rules.header_timeout => Some("header"),
            IDLE if waited >= rules.idle_timeout => Some("idle"),
            _ => None,
        }
    }
}

/// Marks a connection busy while a request is handled, idle after.
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(activity: Arc<Activity>) -> Self {
        activity.enter(BUSY);
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.enter(IDLE);
    }
}

/// The stream, noting every read that brings bytes.
struct TrackedStream<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service: it adds the peer address
/// (`ConnectInfo<SocketAddr>`) and the client certificate ([`ClientCertificate`]), times the
/// body, and marks the connection busy meanwhile.
#[derive(Clone)]
struct ConnService {
    inner: TowerToHyperService<Router>,
    peer: SocketAddr,
    activity: Arc<Activity>,
    body_timeout: Duration,
    /// The certificate the TLS client presented.
    client_cert: Option<Arc<ClientCertificate>>,
    cert_header: Option<Arc<ProxyCertHeader>>,
}

impl ConnService {
    /// The request's client certificate: from the trusted header when the peer is a configured
    /// proxy (the proxy's own TLS certificate, if any, is not the client's), else the
    /// connection's. The header is removed either way, so that nothing after this reads an
    /// untrusted copy.
    fn client_certificate(&self, headers: &mut axum::http::HeaderMap) -> Option<ClientCertificate> {
        let Some(header) = &self.cert_header else {
            return self.client_cert.as_deref().cloned();
        };
        let trusted = header.trusts(self.peer.ip());
        let cert = if trusted {
            match header.read(headers) {
                ProxyCert::Present(c) => Some(c),
                ProxyCert::Absent => None,
                ProxyCert::Invalid(why) => {
                    tracing::warn!(
                        peer = %self.peer,
                        header = %header.name,
                        why,
                        "ignoring a client certificate header from a trusted proxy that does not hold a certificate"
                    );
                    None
                }
            }
        } else {
            self.client_cert.as_deref().cloned()
        };
        headers.remove(&header.name);
        cert
    }
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::enter(self.activity.clone());
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        if let Some(cert) = self.client_certificate(&mut parts.headers) {
            parts.extensions.insert(cert);
        }
        let body = if body.is_end_stream() {
            Body::new(body)
        } else {
            Body::new(TimedBody {
                inner: body,
                limit: self.body_timeout,
                deadline: tokio::time::Instant::now() + self.body_timeout,
                timer: None,
            })
        };
        let answer = self.inner.call(Request::from_parts(parts, body));
        Box::pin(async move {
            let response = answer.await;
            drop(busy);
            response
        })
    }
}

/// A request body that fails with [`BodyTimeout`] if it is not complete by `deadline`. The timer
/// is only made when the body is not already all there.
struct TimedBody {
    inner: Incoming,
    limit: Duration,
    deadline: tokio::time::Instant,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(this.limit).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_cap_leaves_descriptors_for_the_admin_listener_and_the_database() {
        assert_eq!(public_cap(0, 64, 10, Some(256)), 256 - 64 - 10 - 64);
        assert_eq!(public_cap(0, 64, 10, Some(1_048_576)), 1024);
        assert_eq!(public_cap(0, 64, 10, None), 1024);
        assert_eq!(public_cap(0, 64, 10, Some(100)), 1);
        assert_eq!(public_cap(5000, 64, 10, Some(256)), 5000);
    }

    #[test]
    fn the_descriptor_limit_is_read_on_linux() {
        if std::path::Path::new("/proc/self/limits").exists() {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn timeouts_count_from_the_phase_they_belong_to() {
        let rules = Rules {
            header_timeout: Duration::ZERO,
            body_timeout: Duration::ZERO,
            idle_timeout: Duration::from_secs(3600),
            max_connections: 1,
        };
        let a = Activity::new();
        assert_eq!(a.expired(&rules), Some("header"));
        a.enter(BUSY);
        assert_eq!(a.expired(&rules), None);
        a.enter(IDLE);
        assert_eq!(a.expired(&rules), None);
        a.bytes_arrived();
        assert_eq!(a.expired(&rules), Some("header"));
    }

    #[test]
    fn a_body_timeout_is_found_under_wrappers() {
        let inner: axum::BoxError = BodyTimeout(Duration::from_secs(3)).into();
        let wrapped = axum::Error::new(axum::Error::new(inner));
        assert_eq!(
            body_timeout_in(&wrapped)
                .map(ToString::to_string)
                .as_deref(),
            Some("the request body was not received within 3 s")
        );
        assert!(body_timeout_in(&axum::Error::new("other")).is_none());
    }
}
