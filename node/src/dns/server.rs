//! The node's DNS server for pods (kube-dns's role, per node): answers names under the
//! cluster domain from the node proxy's view of Services and EndpointSlices ([`records`]),
//! and forwards every other question to the node's own nameservers, over UDP and over TCP.
//!
//! Answers carry a 5-second TTL (CoreDNS's `kubernetes` plugin default), so a pod sees a
//! Service's change within seconds; negative answers carry the zone's SOA with the same
//! minimum. An ExternalName Service answers with its CNAME followed by the target's records.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::records::Answer;
use crate::proxy::Proxy;

/// TTL of every answer, and the SOA's negative-caching minimum.
pub const TTL: u32 = 5;
/// How long an upstream nameserver gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an idle TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Largest UDP answer to a query without EDNS.
const PLAIN_UDP_MAX: usize = 512;
/// Largest UDP answer this server sends with EDNS (the DNS flag day's 1232 bytes).
const EDNS_UDP_MAX: u16 = 1232;

/// Answers queries; cheap to clone.
#[derive(Clone)]
pub struct DnsServer {
    inner: Arc<Inner>,
}

struct Inner {
    proxy: Proxy,
    domain: String,
    upstreams: Vec<SocketAddr>,
}

impl DnsServer {
    /// A server for cluster `domain` answering from `proxy`, forwarding other names to
    /// `upstreams` (tried in order).
    pub fn new(proxy: Proxy, domain: &str, upstreams: Vec<SocketAddr>) -> DnsServer {
        DnsServer {
            inner: Arc::new(Inner {
                proxy,
                domain: domain.trim_end_matches('.').to_ascii_lowercase(),
                upstreams,
            }),
        }
    }

    /// Serves `udp` and `tcp` on `tasks` until `shutdown`.
    pub fn serve(
        &self,
        udp: UdpSocket,
        tcp: TcpListener,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let udp = Arc::new(udp);
        let (me, t, stop) = (self.clone(), tasks.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, from) = tokio::select! {
                    r = udp.recv_from(&mut buf) => match r {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::debug!(error = %e, "cluster DNS: UDP receive failed");
                            continue;
                        }
                    },
                    _ = stop.cancelled() => return,
                };
                let (me, udp, query) = (me.clone(), udp.clone(), buf[..n].to_vec());
                t.spawn(async move {
                    if let Some(reply) = me.answer(&query, false).await {
                        let _ = udp.send_to(&reply, from).await;
                    }
                });
            }
        });
        let (me, t) = (self.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = tcp.accept() => match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            tracing::debug!(error = %e, "cluster DNS: TCP accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                };
                let me = me.clone();
                let stop = shutdown.clone();
                t.spawn(async move {
                    tokio::select! {
                        _ = me.serve_tcp(stream) => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
    }

    /// Answers length-prefixed queries on one TCP connection until it closes or idles.
    async fn serve_tcp(&self, mut stream: TcpStream) {
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
            let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
            if stream.read_exact(&mut query).await.is_err() {
                return;
            }
            let Some(reply) = self.answer(&query, true).await else {
                return;
            };
            let Ok(n) = u16::try_from(reply.len()) else {
                return;
            };
            let mut out = n.to_be_bytes().to_vec();
            out.extend_from_slice(&reply);
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    /// The reply to one query message (`None`: nothing to send, e.g. not even a header).
    pub async fn answer(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => {
                let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
        reply.metadata.recursion_desired = request.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.add_queries(request.queries.iter().cloned());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_UDP_MAX);
            reply.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query || request.queries.len() != 1 {
            reply.metadata.response_code = ResponseCode::NotImp;
            return reply.to_vec().ok();
        }
        let question = &request.queries[0];
        let name = question.name().to_ascii();
        let answer = self.lookup(&name);
        if answer == Answer::Upstream {
            return Some(match self.forward(query, tcp).await {
                Some(upstream) => upstream,
                None => {
                    reply.metadata.response_code = ResponseCode::ServFail;
                    reply.to_vec().ok()?
                }
            });
        }
        reply.metadata.authoritative = true;
        self.fill(&mut reply, question, answer).await;
        let bytes = reply.to_vec().ok()?;
        let limit = match &request.edns {
            Some(e) => usize::from(e.max_payload().clamp(512, EDNS_UDP_MAX)),
            None => PLAIN_UDP_MAX,
        };
        if !tcp && bytes.len() > limit {
            return reply.truncate().to_vec().ok();
        }
        Some(bytes)
    }

    fn lookup(&self, name: &str) -> Answer {
        self.inner.proxy.dns_lookup(name, &self.inner.domain)
    }

    /// Puts the records (or the negative answer) for `question` into `reply`.
    async fn fill(&self, reply: &mut Message, question: &Query, answer: Answer) {
        let qtype = question.query_type();
        let owner = question.name().clone();
        match answer {
            Answer::Addresses(ips) => {
                let records = address_records(&owner, &ips, qtype);
                if records.is_empty() {
                    reply.add_authority(self.soa());
                }
                reply.add_answers(records);
            }
            Answer::Alias(target) => {
                let Some(target_name) = fqdn(&target) else {
                    reply.metadata.response_code = ResponseCode::ServFail;
                    return;
                };
                reply.add_answer(Record::from_rdata(
                    owner,
                    TTL,
                    RData::CNAME(CNAME(target_name.clone())),
                ));
                if qtype != RecordType::CNAME {
                    let chased = self.chase(&target_name, qtype).await;
                    reply.add_answers(chased);
                }
            }
            Answer::Services(targets) if matches!(qtype, RecordType::SRV | RecordType::ANY) => {
                for t in targets {
                    let Some(target) = fqdn(&t.target) else {
                        continue;
                    };
                    reply.add_additionals(address_records(&target, &[t.address], RecordType::ANY));
                    reply.add_answer(Record::from_rdata(
                        owner.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, t.weight, t.port, target)),
                    ));
                }
            }
            Answer::Pointer(target) if matches!(qtype, RecordType::PTR | RecordType::ANY) => {
                match fqdn(&target) {
                    Some(target) => {
                        reply.add_answer(Record::from_rdata(owner, TTL, RData::PTR(PTR(target))));
                    }
                    None => reply.metadata.response_code = ResponseCode::ServFail,
                }
            }
            Answer::NoData | Answer::Services(_) | Answer::Pointer(_) => {
                reply.add_authority(self.soa());
            }
            Answer::NxDomain | Answer::Upstream => {
                reply.metadata.response_code = ResponseCode::NXDomain;
                reply.add_authority(self.soa());
            }
        }
    }

    /// The records of an alias's target: from the cluster when it is a cluster name, else from
    /// upstream.
    async fn chase(&self, target: &Name, qtype: RecordType) -> Vec<Record> {
        match self.lookup(&target.to_ascii()) {
            Answer::Addresses(ips) => address_records(target, &ips, qtype),
            Answer::Upstream => {
                let mut query = Message::query();
                query.metadata.recursion_desired = true;
                query.add_query(Query::query(target.clone(), qtype));
                let Ok(bytes) = query.to_vec() else {
                    return Vec::new();
                };
                self.forward(&bytes, false)
                    .await
                    .and_then(|r| Message::from_vec(&r).ok())
                    .map(|m| m.answers)
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// The cluster zone's SOA (CoreDNS's values), for negative answers.
    fn soa(&self) -> Record {
        let domain = &self.inner.domain;
        let zone = fqdn(domain).unwrap_or_else(Name::root);
        let name = |prefix: &str| fqdn(&format!("{prefix}.{domain}")).unwrap_or_else(Name::root);
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Record::from_rdata(
            zone,
            TTL,
            RData::SOA(SOA::new(
                name("ns.dns"),
                name("hostmaster"),
                serial,
                7200,
                1800,
                86400,
                TTL,
            )),
        )
    }

    /// Asks the upstream nameservers, in order, the same question; their first answer.
    async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        for upstream in &self.inner.upstreams {
            let asked = if tcp {
                tokio::time::timeout(UPSTREAM_TIMEOUT, forward_tcp(*upstream, query)).await
            } else {
                tokio::time::timeout(UPSTREAM_TIMEOUT, forward_udp(*upstream, query)).await
            };
            match asked {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => {
                    tracing::debug!(%upstream, error = %e, "cluster DNS: upstream failed")
                }
                Err(_) => tracing::debug!(%upstream, "cluster DNS: upstream timed out"),
            }
        }
        None
    }
}

/// The fully qualified name of `name` (given without its final dot).
fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

/// A and AAAA records of `ips` for `owner` that answer `qtype`.
fn address_records(owner: &Name, ips: &[IpAddr], qtype: RecordType) -> Vec<Record> {
    ips.iter()
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|rdata| Record::from_rdata(owner.clone(), TTL, rdata))
        .collect()
}

async fn forward_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Only the answer to this question (same ID) counts.
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(query);
    stream.write_all(&out).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::table;
    use serde_json::json;

    fn proxy() -> Proxy {
        let services: Vec<k8s_openapi::api::core::v1::Service> = [
            json!({"metadata": {"name": "web", "namespace": "shop"},
                   "spec": {"clusterIP": "127.2.0.9", "ports": [{"port": 80, "name": "http"}]}}),
            json!({"metadata": {"name": "mail", "namespace": "shop"},
                   "spec": {"type": "ExternalName", "externalName": "web.shop.svc.cluster.local"}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        let proxy = Proxy::new();
        proxy.set_names(&table::build(&services, [], "127.0.0.1".parse().unwrap()));
        proxy
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut q = Message::query();
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        q.to_vec().unwrap()
    }

    fn addresses(m: &Message) -> Vec<String> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                RData::CNAME(c) => Some(format!("CNAME {}", c.0)),
                RData::PTR(p) => Some(format!("PTR {}", p.0)),
                RData::SRV(s) => Some(format!(
                    "SRV {} {} {} {}",
                    s.priority, s.weight, s.port, s.target
                )),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn cluster_names_are_answered_with_authority() {
        let server = DnsServer::new(proxy(), "cluster.local", Vec::new());
        let ask = |name: &'static str, t| {
            let server = server.clone();
            async move {
                let q = query(name, t);
                let reply = server.answer(&q, false).await.unwrap();
                let m = Message::from_vec(&reply).unwrap();
                assert_eq!(m.metadata.id, Message::from_vec(&q).unwrap().metadata.id);
                m
            }
        };
        let m = ask("web.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(addresses(&m), ["127.2.0.9"]);
        assert_eq!(m.answers[0].ttl, TTL);

        // No IPv6 address: an empty answer with the zone's SOA, not an error.
        let m = ask("web.shop.svc.cluster.local.", RecordType::AAAA).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);

        let m = ask("nope.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

        // A named port's SRV record, its target's address alongside; the reverse lookup of
        // the ClusterIP.
        let m = ask("_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV).await;
        assert_eq!(addresses(&m), ["SRV 0 100 80 web.shop.svc.cluster.local."]);
        assert_eq!(m.additionals.len(), 1);
        let m = ask("9.0.2.127.in-addr.arpa.", RecordType::PTR).await;
        assert_eq!(addresses(&m), ["PTR web.shop.svc.cluster.local."]);

        // An ExternalName Service is an alias, followed to its target's address.
        let m = ask("mail.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!(
            addresses(&m),
            ["CNAME web.shop.svc.cluster.local.", "127.2.0.9"]
        );
    }

    #[tokio::test]
    async fn other_names_go_upstream_and_without_upstream_fail_as_servfail() {
        // A fake upstream that answers every question with 192.0.2.7.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, from) = upstream.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = Message::response(q.metadata.id, OpCode::Query);
                r.add_queries(q.queries.clone());
                r.add_answer(Record::from_rdata(
                    q.queries[0].name().clone(),
                    60,
                    RData::A(A("192.0.2.7".parse().unwrap())),
                ));
                upstream.send_to(&r.to_vec().unwrap(), from).await.unwrap();
            }
        });
        let server = DnsServer::new(proxy(), "cluster.local", vec![at]);
        let reply = server
            .answer(&query("example.org.", RecordType::A), false)
            .await
            .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(addresses(&m), ["192.0.2.7"]);
        assert!(!m.metadata.authoritative);

        let lonely = DnsServer::new(proxy(), "cluster.local", Vec::new());
        let reply = lonely
            .answer(&query("example.org.", RecordType::A), false)
            .await
            .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);

        // Garbage gets FORMERR with the same ID.
        let reply = server.answer(&[0x12, 0x34, 0xff], false).await.unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (0x1234, ResponseCode::FormErr)
        );
    }

    #[tokio::test]
    async fn the_server_answers_over_udp_and_tcp() {
        let server = DnsServer::new(proxy(), "cluster.local", Vec::new());
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (udp_at, tcp_at) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        server.serve(udp, tcp, &tasks, stop.clone());

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&query("web.shop.svc.cluster.local.", RecordType::A), udp_at)
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("a UDP answer in time")
            .unwrap();
        assert_eq!(
            addresses(&Message::from_vec(&buf[..n]).unwrap()),
            ["127.2.0.9"]
        );

        let mut stream = TcpStream::connect(tcp_at).await.unwrap();
        for _ in 0..2 {
            // Two questions on one connection.
            let q = query("web.shop.svc.cluster.local.", RecordType::A);
            let mut out = (q.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&q);
            stream.write_all(&out).await.unwrap();
            let mut len = [0u8; 2];
            tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut len))
                .await
                .expect("a TCP answer in time")
                .unwrap();
            let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
            stream.read_exact(&mut reply).await.unwrap();
            assert_eq!(
                addresses(&Message::from_vec(&reply).unwrap()),
                ["127.2.0.9"]
            );
        }
        stop.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait())
            .await
            .expect("the server stops");
    }
}
