//! Picks the endpoint for a new connection: round-robin over the ready endpoints, or the
//! client's previous endpoint under ClientIP session affinity. It hands out an ordered list of
//! candidates, so a caller whose connection is refused tries the next one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::table::Route;

/// The balancer of one Service port; shared by its listeners and connections.
#[derive(Debug, Default)]
pub struct Balancer {
    // std locks: short map and vector operations only, never held across an await.
    route: RwLock<Route>,
    next: AtomicUsize,
    sticky: Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>,
}

impl Balancer {
    /// A balancer over `route`.
    pub fn new(route: Route) -> Balancer {
        Balancer {
            route: RwLock::new(route),
            ..Balancer::default()
        }
    }

    /// Replaces the endpoints (a readiness change takes effect for the next connection).
    pub fn set(&self, route: Route) {
        let mut current = self.route.write().unwrap_or_else(|p| p.into_inner());
        if *current != route {
            // Forget affinities to endpoints that are gone.
            self.sticky
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, (ep, _)| route.endpoints.contains(ep));
            *current = route;
        }
    }

    /// Whether any endpoint is ready.
    pub fn is_empty(&self) -> bool {
        self.route
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .endpoints
            .is_empty()
    }

    /// The endpoints to try for a connection from `client`, best first: under affinity the
    /// client's endpoint (if still ready and not expired), then round-robin order.
    pub fn candidates(&self, client: IpAddr, now: Instant) -> Vec<SocketAddr> {
        let route = self.route.read().unwrap_or_else(|p| p.into_inner());
        let n = route.endpoints.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut out: Vec<SocketAddr> = (0..n).map(|i| route.endpoints[(start + i) % n]).collect();
        if let Some(timeout) = route.affinity {
            let sticky = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((ep, at)) = sticky.get(&client)
                && now.duration_since(*at) < timeout
                && let Some(i) = out.iter().position(|e| e == ep)
            {
                let ep = out.remove(i);
                out.insert(0, ep);
            }
        }
        out
    }

    /// Records that `client` was connected to `endpoint` (for affinity).
    pub fn connected(&self, client: IpAddr, endpoint: SocketAddr, now: Instant) {
        let affinity = self
            .route
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .affinity;
        if let Some(timeout) = affinity {
            let mut sticky = self.sticky.lock().unwrap_or_else(|p| p.into_inner());
            if sticky.len() > 65536 {
                sticky.retain(|_, (_, at)| now.duration_since(*at) < timeout);
            }
            sticky.insert(client, (endpoint, now));
        }
    }

    /// The affinity timeout, if any.
    pub fn affinity(&self) -> Option<Duration> {
        self.route
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .affinity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn round_robin_visits_every_endpoint_and_lists_the_rest_as_fallbacks() {
        let b = Balancer::new(Route {
            endpoints: eps(&["127.1.0.1:80", "127.1.0.2:80", "127.1.0.3:80"]),
            affinity: None,
        });
        let client: IpAddr = "127.0.0.1".parse().unwrap();
        let now = Instant::now();
        let firsts: Vec<SocketAddr> = (0..3).map(|_| b.candidates(client, now)[0]).collect();
        assert_eq!(
            firsts,
            eps(&["127.1.0.1:80", "127.1.0.2:80", "127.1.0.3:80"])
        );
        assert_eq!(b.candidates(client, now).len(), 3, "all are fallbacks");
        b.set(Route {
            endpoints: eps(&["127.1.0.2:80"]),
            affinity: None,
        });
        for _ in 0..3 {
            assert_eq!(b.candidates(client, now), eps(&["127.1.0.2:80"]));
        }
        b.set(Route::default());
        assert!(b.is_empty() && b.candidates(client, now).is_empty());
    }

    #[test]
    fn client_ip_affinity_sticks_until_timeout_or_the_endpoint_goes() {
        let b = Balancer::new(Route {
            endpoints: eps(&["127.1.0.1:80", "127.1.0.2:80"]),
            affinity: Some(Duration::from_secs(10)),
        });
        let (c1, c2): (IpAddr, IpAddr) =
            ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let now = Instant::now();
        let first = b.candidates(c1, now)[0];
        b.connected(c1, first, now);
        for _ in 0..5 {
            assert_eq!(b.candidates(c1, now)[0], first);
        }
        let other: Vec<SocketAddr> = (0..4).map(|_| b.candidates(c2, now)[0]).collect();
        assert!(
            other.iter().any(|e| *e != first),
            "another client is balanced"
        );
        let later = now + Duration::from_secs(11);
        let after: Vec<SocketAddr> = (0..4).map(|_| b.candidates(c1, later)[0]).collect();
        assert!(after.iter().any(|e| *e != first), "expired");
        b.set(Route {
            endpoints: eps(&["127.1.0.9:80"]),
            affinity: Some(Duration::from_secs(10)),
        });
        assert_eq!(b.candidates(c1, now)[0], "127.1.0.9:80".parse().unwrap());
    }
}
