//! Outgoing HTTP from guests: denied unless the request's host is on the
//! instance's allow list.
//!
//! The check runs in wasmtime-wasi-http's `send_request` hook, so a denied
//! guest sees the standard `wasi:http` error `HTTP-request-denied` and no
//! connection is ever opened.
//!
//! A [`Resolver`] comes first: a host it knows (the node agent resolves
//! cluster Service names) is allowed and the connection goes to the address
//! it names, while the request keeps its `Host` header.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Hosts a guest may send HTTP requests to.
///
/// Entries: an exact host (`api.example.com`, matched case-insensitively on
/// the host alone, any port), an exact `host:port` (`127.0.0.1:8080`), a
/// suffix wildcard (`*.example.com`, which does not match `example.com`
/// itself), or `*` for any host. The empty list (the default) denies all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Arc<[String]>,
}

impl AllowList {
    /// An allow list of these entries.
    pub fn new<I, S>(entries: I) -> AllowList
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AllowList {
            entries: entries
                .into_iter()
                .map(|e| e.into().to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request to `host` on `port` is allowed.
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.entries.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some(suffix) = entry.strip_prefix("*.") {
                return host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.';
            }
            match (entry.rsplit_once(':'), port) {
                // `host:port`, but not a bare IPv6 address.
                (Some((h, p)), Some(port)) if !h.contains(':') && p.parse() == Ok(port) => {
                    h.trim_start_matches('[').trim_end_matches(']') == host
                }
                _ => entry.trim_start_matches('[').trim_end_matches(']') == host,
            }
        })
    }

    /// Whether the list allows nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Maps names a guest sends HTTP requests to onto addresses (the node agent
/// maps cluster Service names onto their ClusterIPs). Must not block: it runs
/// on the request path.
pub trait Resolver: Send + Sync + 'static {
    /// Where a request for `host` on `port` goes, or `None` for a host it does
    /// not know (then the allow list decides).
    fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr>;
}

/// The `wasi:http` hooks of one instance: the default behaviour plus the
/// resolver and the allow-list check on outgoing requests.
pub(crate) struct OutgoingPolicy {
    allow: AllowList,
    resolver: Option<Arc<dyn Resolver>>,
}

impl OutgoingPolicy {
    pub(crate) fn new(allow: AllowList, resolver: Option<Arc<dyn Resolver>>) -> OutgoingPolicy {
        OutgoingPolicy { allow, resolver }
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutgoingPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let uri = request.uri().clone();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let resolved = match (uri.host(), &self.resolver) {
            (Some(host), Some(r)) => r.resolve(host, port),
            _ => None,
        };
        let allowed = match (resolved, uri.host()) {
            (Some(addr), _) => {
                // The connection goes to the resolved address; the Host header (set from
                // the original authority) still names what the guest asked for.
                let mut parts = uri.clone().into_parts();
                parts.authority = addr.to_string().parse().ok();
                if let Ok(new) = http::Uri::from_parts(parts) {
                    *request.uri_mut() = new;
                }
                true
            }
            (None, Some(host)) => self.allow.allows(host, Some(port)),
            (None, None) => false,
        };
        if !allowed {
            tracing::info!(uri = %uri, "outgoing HTTP request denied: host not on the allow list");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matching() {
        let list = AllowList::new(["api.example.com", "*.svc.local", "127.0.0.1:8080", "[::1]"]);
        let cases: &[(&str, Option<u16>, bool)] = &[
            ("api.example.com", Some(443), true),
            ("API.Example.com", Some(80), true),
            ("example.com", Some(443), false),
            ("evil-api.example.com", Some(443), false),
            ("a.svc.local", Some(80), true),
            ("a.b.svc.local", Some(80), true),
            ("svc.local", Some(80), false),
            ("xsvc.local", Some(80), false),
            ("127.0.0.1", Some(8080), true),
            ("127.0.0.1", Some(8081), false),
            ("::1", Some(80), true),
            ("[::1]", Some(80), true),
        ];
        for (host, port, expected) in cases {
            assert_eq!(list.allows(host, *port), *expected, "{host}:{port:?}");
        }
    }

    #[test]
    fn empty_list_denies_and_star_allows_everything() {
        assert!(!AllowList::default().allows("localhost", Some(80)));
        assert!(AllowList::new(["*"]).allows("anything.at.all", Some(1)));
    }
}
