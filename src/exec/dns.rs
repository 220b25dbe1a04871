//! EFFECTS: plain DNS queries to one authoritative server (DESIGN §4:
//! domain_setup verifies the answer PowerDNS really gives). UDP through
//! `hickory-client`, no recursion asked for, no resolver configuration of
//! this machine involved: the question goes to exactly the server named.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_client::client::Client;
use hickory_client::proto::op::{Query, ResponseCode};
use hickory_client::proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::udp::UdpClientStream;
use hickory_client::proto::xfer::{DnsHandle, DnsRequestOptions};

/// Why a DNS query had no usable answer. Messages say what to check.
#[derive(Debug, thiserror::Error)]
pub enum DnsQueryError {
    /// The name is not a DNS name.
    #[error("{0:?} is not a DNS name")]
    BadName(String),
    /// No answer from the server in time, or the socket failed.
    #[error("no DNS answer from {server}: {detail}; check that PowerDNS serves DNS there (dns.authoritative)")]
    NoAnswer {
        /// Server asked.
        server: SocketAddr,
        /// What went wrong.
        detail: String,
    },
}

/// What an authoritative server said about one name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// Response code (`NOERROR`, `NXDOMAIN`, `REFUSED`, ...).
    pub rcode: String,
    /// Addresses in the answer section (A or AAAA), sorted.
    pub addresses: Vec<IpAddr>,
}

/// Asks `server` for the `A` (`ipv6` false) or `AAAA` records of `name`,
/// once, bounded by `timeout`. Recursion is not requested: `server` is
/// expected to be authoritative for `name`.
pub async fn query_addresses(
    server: SocketAddr,
    name: &str,
    ipv6: bool,
    timeout: Duration,
) -> Result<DnsAnswer, DnsQueryError> {
    let fqdn = format!("{}.", name.trim_end_matches('.'));
    let qname = Name::from_str(&fqdn).map_err(|_| DnsQueryError::BadName(name.to_string()))?;
    let rtype = if ipv6 {
        RecordType::AAAA
    } else {
        RecordType::A
    };
    let no_answer = |detail: String| DnsQueryError::NoAnswer { server, detail };
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(timeout))
        .build();
    let (client, background) = tokio::time::timeout(timeout, Client::connect(stream))
        .await
        .map_err(|_| no_answer("no socket in time".into()))?
        .map_err(|e| no_answer(e.to_string()))?;
    let bg = tokio::spawn(background);
    let mut query = Query::query(qname, rtype);
    query.set_query_class(DNSClass::IN);
    let mut options = DnsRequestOptions::default();
    options.recursion_desired = false;
    options.use_edns = false;
    let result = tokio::time::timeout(timeout, async {
        use futures::StreamExt;
        let mut responses = client.lookup(query, options);
        responses.next().await
    })
    .await;
    bg.abort();
    let response = match result {
        Err(_) => {
            return Err(no_answer(format!(
                "no answer within {} ms",
                timeout.as_millis()
            )))
        }
        Ok(None) => return Err(no_answer("the query ended without an answer".into())),
        Ok(Some(Err(e))) => return Err(no_answer(e.to_string())),
        Ok(Some(Ok(r))) => r,
    };
    let mut addresses: Vec<IpAddr> = response
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    addresses.sort();
    Ok(DnsAnswer {
        rcode: rcode_name(response.response_code()),
        addresses,
    })
}

fn rcode_name(code: ResponseCode) -> String {
    code.to_str().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silent_server_is_no_answer_in_time() {
        // A bound UDP socket that never answers.
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let started = std::time::Instant::now();
        let e = query_addresses(addr, "shop.example.test", false, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, DnsQueryError::NoAnswer { .. }), "{e:?}");
        assert!(e.to_string().contains("dns.authoritative"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn bad_names_are_refused_before_sending() {
        let e = query_addresses(
            "127.0.0.1:9".parse().unwrap(),
            &"a".repeat(300),
            false,
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, DnsQueryError::BadName(_)), "{e:?}");
    }
}
