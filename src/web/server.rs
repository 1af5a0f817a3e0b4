//! The console's connection loop: accepts connections (plain TCP, or TLS-terminated by
//! `console::tls::TlsListener`) and serves each with HTTP/1.1, within limits that `axum::serve`
//! does not have.
//!
//! - **Idle connections are closed** after `--idle-timeout` without a request (the same timer
//!   closes a client that sends its request head too slowly). `axum::serve` keeps a connection for
//!   as long as its client wants. Agents heartbeat every 30 s, and a client that keeps its
//!   connection between heartbeats keeps it for ever: measured, each idle connection held 15–20 KiB
//!   of the console's memory (20,000 of them: 318 MiB), and at the open-file limit the console
//!   could accept no one, administrators included, until clients left.
//! - **At most `--max-connections` at once** (2,048 by default, about 40 MiB at most). When every
//!   slot is taken and a client waits, the console asks every connection that has had a request
//!   to close once its current one is answered (idle ones close at once, as nginx reclaims its
//!   keep-alive connections), so clients that keep connections cannot starve new ones; meanwhile
//!   new connections wait in the kernel's queue instead of failing for want of file descriptors.

use crate::state::ConnectionMetrics;
use axum::extract::ConnectInfo;
use axum::response::Response;
use axum::serve::Listener;
use axum::Extension;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tower::util::MapRequestLayer;
use tower::{Layer, Service};

/// How the console treats its clients' connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// `--max-connections` unless the open-file limit allows fewer. A connection costs 15–20 KiB of
/// memory, so this bounds them to about 40 MiB; a fleet of 100,000 agents heartbeating every 30 s
/// on connections of their own keeps a few dozen open.
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;

/// When every slot is taken, connections are asked to close at most this often; in between, new
/// clients wait for the slots those requests free.
const DRAIN_EVERY: Duration = Duration::from_secs(1);

/// Serves `router` (an axum `Router`, or the console's [`super::GatedApp`]) on the connections
/// `listener` hands out until `shutdown` resolves; then stops accepting, lets requests in flight
/// finish, closes idle connections, and returns once every connection is closed. Handlers can read
/// the client's address as `ConnectInfo<SocketAddr>`.
pub async fn serve<L, S>(
    mut listener: L,
    router: S,
    limits: ConnectionLimits,
    metrics: Arc<ConnectionMetrics>,
    shutdown: impl Future<Output = ()>,
) where
    L: Listener<Addr = SocketAddr>,
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max));
    metrics.limit.store(max as u64, Relaxed);
    let mut http = http1::Builder::new();
    // The header read timer runs from the moment hyper waits for a request head, which on a
    // kept-alive connection is the moment the previous response was sent: an idle timeout.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .keep_alive(true);
    // Each change asks the open connections to close after their current request: `false` those
    // that have had a request (a drain), `true` all of them (the stop).
    let (close_all, _) = watch::channel(false);
    let mut drained_at: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // A slot is taken once a client is there, so a full console drains only when someone
        // waits; that client waits here, the ones after it in the kernel's queue.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if drained_at.is_none_or(|at| at.elapsed() >= DRAIN_EVERY) {
                    tracing::warn!(
                        max_connections = max,
                        "every connection slot is in use: closing the idle connections to make room (see --max-connections)"
                    );
                    close_all.send_replace(false);
                    metrics.drains.fetch_add(1, Relaxed);
                    drained_at = Some(Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        metrics.accepted.fetch_add(1, Relaxed);
        metrics.open.fetch_add(1, Relaxed);
        // Per connection, layers over the router (not `Router::layer`, which wraps every route).
        let served = Arc::new(AtomicBool::new(false));
        let first_request = served.clone();
        let service = MapRequestLayer::new(move |request| {
            first_request.store(true, Relaxed);
            request
        })
        .layer(Extension(ConnectInfo(addr)).layer(router.clone()));
        let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        let mut asked_to_close = close_all.subscribe();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let result = loop {
                tokio::select! {
                    result = connection.as_mut() => break result,
                    changed = asked_to_close.changed() => {
                        let stopping = changed.is_err() || *asked_to_close.borrow_and_update();
                        // A drain spares a connection whose first request may be on its way (its
                        // client just connected); the idle timeout still applies to it.
                        if stopping || served.load(Relaxed) {
                            connection.as_mut().graceful_shutdown();
                            break connection.await;
                        }
                    }
                }
            };
            metrics.open.fetch_sub(1, Relaxed);
            match result {
                Ok(()) => {}
                Err(e) if e.is_timeout() => {
                    metrics.closed_idle.fetch_add(1, Relaxed);
                }
                // Clients that go away mid-request and the like: theirs, not ours.
                Err(e) => {
                    tracing::debug!(peer = %addr, error = %e, "connection ended with an error")
                }
            }
        });
    }
    drop(listener);
    close_all.send_replace(true);
    // Every slot back means every connection has closed.
    let _ = slots.acquire_many(max as u32).await;
}

/// The limit on connections when `--max-connections` is not given: [`DEFAULT_MAX_CONNECTIONS`],
/// or less when the process's open-file limit allows less. The console's own files come first:
/// its outbound calls to agents (kept poll connections, polls in flight), TLS handshakes in
/// progress and the database; clients still get at least half of the limit.
pub fn default_max_connections(open_file_limit: u64, outbound: usize) -> usize {
    const OWN_FILES: u64 = 128;
    let reserve = (outbound as u64 + OWN_FILES).min(open_file_limit / 2);
    usize::try_from(open_file_limit - reserve)
        .unwrap_or(usize::MAX)
        .min(DEFAULT_MAX_CONNECTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_bounds_memory_and_leaves_the_console_its_own_files() {
        // A systemd service's usual hard limit, raised to at start: memory decides.
        assert_eq!(
            default_max_connections(524_288, 1_000 + 256 + 512),
            DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(
            default_max_connections(3_900, 1_000 + 256 + 512),
            3_900 - 1_896
        );
        // The old default of 1,024: outbound needs more than half, clients still get half.
        assert_eq!(default_max_connections(1_024, 1_000 + 256 + 512), 512);
        assert_eq!(default_max_connections(0, 10), 0);
    }

    use axum::routing::get;
    use axum::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// The loop over a real socket, answering `/peer` with the client's address as the handlers
    /// see it, and `/slow` after 600 ms.
    async fn start(
        limits: ConnectionLimits,
    ) -> (
        SocketAddr,
        Arc<ConnectionMetrics>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    "done"
                }),
            );
        let metrics = Arc::new(ConnectionMetrics::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, limits, metrics.clone(), async {
            let _ = stopped.await;
        }));
        (addr, metrics, stop, server)
    }

    /// Sends a GET on `tcp` and returns the response's body (responses here are small and come
    /// whole).
    async fn get_on(tcp: &mut TcpStream, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
    }

    /// Resolves when the server closes `tcp`; panics if it sends anything or takes over 10 s.
    async fn closed_by_server(tcp: &mut TcpStream) {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("the server kept the connection open");
        assert!(matches!(read, Ok(0)), "expected the close, got {read:?}");
    }

    #[tokio::test]
    async fn idle_and_slow_clients_are_closed_and_kept_alive_ones_reused() {
        let limits = ConnectionLimits {
            idle_timeout: Duration::from_millis(400),
            max_connections: 10,
        };
        let (addr, metrics, stop, server) = start(limits).await;

        let mut idle = TcpStream::connect(addr).await.unwrap();
        let me = idle.local_addr().unwrap().to_string();
        assert_eq!(get_on(&mut idle, "/peer").await, me);
        // Kept alive: a second request on the same connection is answered.
        assert_eq!(get_on(&mut idle, "/peer").await, me);
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /peer HTTP/1.1\r\nho").await.unwrap();
        let mut silent = TcpStream::connect(addr).await.unwrap();

        closed_by_server(&mut idle).await;
        closed_by_server(&mut slow).await;
        closed_by_server(&mut silent).await;
        assert_eq!(metrics.accepted.load(Relaxed), 3);
        assert_eq!(metrics.closed_idle.load(Relaxed), 3);
        // The server's tasks end just after the sockets close.
        for _ in 0..100 {
            if metrics.open.load(Relaxed) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.open.load(Relaxed), 0);
        assert_eq!(metrics.limit.load(Relaxed), 10);

        // A request taking longer than the idle timeout (600 against 400 ms) is not cut: the
        // timer runs only while the connection waits for a request.
        let mut busy = TcpStream::connect(addr).await.unwrap();
        assert_eq!(get_on(&mut busy, "/slow").await, "done");
        drop(stop);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn at_the_limit_used_connections_make_room_and_requests_in_flight_and_new_clients_are_kept(
    ) {
        // An idle timeout that cannot fire during the test: only the drain frees slots.
        let limits = ConnectionLimits {
            idle_timeout: Duration::from_secs(60),
            max_connections: 3,
        };
        let (addr, metrics, stop, server) = start(limits).await;
        // Connected, its request not sent yet.
        let mut fresh = TcpStream::connect(addr).await.unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        get_on(&mut idle, "/peer").await;
        let in_flight = tokio::spawn(async move {
            let mut busy = TcpStream::connect(addr).await.unwrap();
            let body = get_on(&mut busy, "/slow").await;
            // Answered, then closed: a drained connection takes no further request.
            let mut buf = [0u8; 16];
            let after = busy.read(&mut buf).await;
            (body, matches!(after, Ok(0)))
        });
        for _ in 0..100 {
            if metrics.open.load(Relaxed) == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.open.load(Relaxed), 3);

        // The kernel completes the fourth connection; the console, out of slots, asks the two
        // that had a request to close: the idle one at once, the busy one once its answer is
        // sent. The fresh one is spared and still answers.
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        let body = get_on(&mut fourth, "/peer").await;
        assert_eq!(body, fourth.local_addr().unwrap().to_string());
        closed_by_server(&mut idle).await;
        assert_eq!(in_flight.await.unwrap(), ("done".to_string(), true));
        assert_eq!(
            get_on(&mut fresh, "/peer").await,
            fresh.local_addr().unwrap().to_string()
        );
        assert_eq!(metrics.drains.load(Relaxed), 1);
        assert_eq!(metrics.closed_idle.load(Relaxed), 0);
        assert_eq!(metrics.accepted.load(Relaxed), 4);
        drop(stop);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_finishes_the_requests_in_flight_and_closes_the_idle_connections() {
        let limits = ConnectionLimits {
            idle_timeout: Duration::from_secs(60),
            max_connections: 10,
        };
        let (addr, _metrics, stop, server) = start(limits).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        get_on(&mut idle, "/peer").await;
        let in_flight = tokio::spawn(async move {
            let mut busy = TcpStream::connect(addr).await.unwrap();
            get_on(&mut busy, "/slow").await
        });
        // Let the slow request reach its handler before the stop.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(stop);
        // With a 60 s idle timeout, only the shutdown can close this one.
        closed_by_server(&mut idle).await;
        assert_eq!(in_flight.await.unwrap(), "done");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the loop returns once every connection closed")
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }
}
