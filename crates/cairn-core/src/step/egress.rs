//! Where `http` steps may connect: the egress policy.
//!
//! A step's URL comes from a workflow template, and so, through `input`, from whoever
//! may submit a run. Without a policy an operator could make a worker fetch its cloud's
//! metadata service, a database's admin port or anything else only the worker can
//! reach, and read the answer back as the step's output (server-side request forgery).
//! So by default a step reaches **public addresses only**: [`refused_range`] names the
//! ranges that are refused (loopback, private, link-local, CGNAT, ULA, multicast,
//! documentation, … and their IPv4-mapped and -embedding IPv6 forms).
//!
//! The check is made where the address is known for certain, so that names which
//! resolve (or re-resolve, as in DNS rebinding) to an internal address are caught:
//!
//! * at **connect time**, by the step client's DNS resolver ([`EgressResolver`]), on
//!   every address a name resolves to;
//! * on **IP-literal hosts** before the request is sent ([`Rules::check_url`]): reqwest
//!   does not ask the resolver about them. The `url` crate has already normalised odd
//!   spellings (`http://2130706433/`, `http://0x7f.1/`) to the address they mean;
//! * on **every redirect hop**, by the client's redirect policy, with the same check.
//!
//! Step clients never use a proxy from the environment (`HTTP_PROXY`, `HTTPS_PROXY`,
//! `ALL_PROXY`): through a proxy the worker resolves only the proxy's name, the proxy
//! resolves and connects to the target itself, and the check above would see nothing.
//!
//! An operator widens the policy with [`EgressAllow`] (`CAIRN_EGRESS_ALLOW`): hosts,
//! addresses or CIDRs reached anyway, for a deployment's own services. A workflow
//! narrows it per step with `allowed_hosts`. `llm` steps call the model server an
//! operator configured (`CAIRN_LLM_BASE_URL`), which is trusted as it is and not
//! subject to this policy.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::workflow::normalize_host;

/// How many redirects a step follows, at most.
pub const MAX_REDIRECTS: usize = 10;

/// How many clients narrowed by distinct `allowed_hosts` lists a worker keeps.
const NARROWED_CLIENTS_KEPT: usize = 256;

/// Why a step may not connect somewhere, or why the policy could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EgressError {
    #[error(
        "refused to connect to {address} ({range}): steps may reach public addresses only; \
         an operator can allow it with CAIRN_EGRESS_ALLOW (--egress-allow)"
    )]
    Refused {
        address: IpAddr,
        range: &'static str,
    },
    #[error(
        "refused to connect to `{host}`: the step's allowed_hosts are {allowed}; \
         change allowed_hosts in the workflow to allow it"
    )]
    NotInAllowedHosts { host: String, allowed: String },
    #[error(
        "refused to connect to `{host}` on port {port}: CAIRN_EGRESS_ALLOW (--egress-allow) \
         allows it only on port {allowed}"
    )]
    WrongPort {
        host: String,
        port: u16,
        allowed: String,
    },
    #[error("the URL's scheme `{0}` is not allowed: steps use http and https only")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("stopped after {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    /// A redirect hop was refused; `to` is shown without userinfo or query.
    #[error("redirected to {to}: {refused}")]
    Redirected {
        to: String,
        refused: Box<EgressError>,
    },
    #[error("cannot resolve `{host}`: {message}")]
    Resolve { host: String, message: String },
    #[error(
        "`{0}` in the egress allow list is not a host name, an IP address or a CIDR \
         (with an optional `:port`)"
    )]
    BadEntry(String),
    #[error("building the step HTTP client: {0}")]
    Client(String),
}

impl EgressError {
    /// Whether a retry might go differently (only name resolution and client set-up
    /// can; a refused address stays refused).
    pub fn is_retryable(&self) -> bool {
        match self {
            EgressError::Resolve { .. } | EgressError::Client(_) => true,
            EgressError::Redirected { refused, .. } => refused.is_retryable(),
            _ => false,
        }
    }
}

/// Why `ip` is refused as a step's destination, or `None` for a public address.
///
/// IPv4-mapped (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`) forms
/// are judged by the IPv4 address they carry. Ranges follow the IANA special-purpose
/// registries; those that can never be a legitimate public service are refused.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

const V4_REFUSED: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "\"this network\", 0.0.0.0/8"),
    ([10, 0, 0, 0], 8, "private, 10.0.0.0/8"),
    ([100, 64, 0, 0], 10, "carrier-grade NAT, 100.64.0.0/10"),
    ([127, 0, 0, 0], 8, "loopback, 127.0.0.0/8"),
    (
        [169, 254, 0, 0],
        16,
        "link-local and cloud metadata, 169.254.0.0/16",
    ),
    ([172, 16, 0, 0], 12, "private, 172.16.0.0/12"),
    (
        [192, 0, 0, 0],
        24,
        "IETF protocol assignments, 192.0.0.0/24",
    ),
    ([192, 0, 2, 0], 24, "documentation, 192.0.2.0/24"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast, 192.88.99.0/24"),
    ([192, 168, 0, 0], 16, "private, 192.168.0.0/16"),
    ([198, 18, 0, 0], 15, "benchmarking, 198.18.0.0/15"),
    ([198, 51, 100, 0], 24, "documentation, 198.51.100.0/24"),
    ([203, 0, 113, 0], 24, "documentation, 203.0.113.0/24"),
    ([224, 0, 0, 0], 4, "multicast, 224.0.0.0/4"),
    ([240, 0, 0, 0], 4, "reserved and broadcast, 240.0.0.0/4"),
    // A public address, but Azure's host endpoint (DHCP, DNS, health, metadata agent).
    (
        [168, 63, 129, 16],
        32,
        "cloud platform endpoint, 168.63.129.16",
    ),
];

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    V4_REFUSED.iter().find_map(|(base, prefix, name)| {
        let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
        (bits & mask == u32::from_be_bytes(*base) & mask).then_some(*name)
    })
}

/// What a special IPv6 range means: refused, or judged by the IPv4 address inside.
enum V6Range {
    Refused(&'static str),
    /// The IPv4 address is the last 32 bits.
    EmbedsLast32,
    /// 6to4: the IPv4 address is bits 16..48.
    Embeds6to4,
}

const V6_RANGES: &[(u128, u8, V6Range)] = &[
    (0, 128, V6Range::Refused("unspecified, ::")),
    (1, 128, V6Range::Refused("loopback, ::1")),
    (0xffff_0000_0000, 96, V6Range::EmbedsLast32),
    (
        0xffff_0000_0000_0000,
        96,
        V6Range::Refused("IPv4-translated, ::ffff:0:0:0/96"),
    ),
    (
        0,
        96,
        V6Range::Refused("IPv4-compatible (deprecated), ::/96"),
    ),
    (0x0064_ff9b << 96, 96, V6Range::EmbedsLast32),
    (
        0x0064_ff9b_0001 << 80,
        48,
        V6Range::Refused("local-use NAT64, 64:ff9b:1::/48"),
    ),
    (
        0x0100 << 112,
        64,
        V6Range::Refused("discard-only, 100::/64"),
    ),
    (
        0x2001_0db8 << 96,
        32,
        V6Range::Refused("documentation, 2001:db8::/32"),
    ),
    (
        0x2001 << 112,
        23,
        V6Range::Refused("IETF protocol assignments and Teredo, 2001::/23"),
    ),
    (0x2002 << 112, 16, V6Range::Embeds6to4),
    (
        0x3fff << 112,
        20,
        V6Range::Refused("documentation, 3fff::/20"),
    ),
    (
        0xfc00 << 112,
        7,
        V6Range::Refused("unique local (incl. cloud metadata), fc00::/7"),
    ),
    (0xfe80 << 112, 10, V6Range::Refused("link-local, fe80::/10")),
    (
        0xfec0 << 112,
        10,
        V6Range::Refused("site-local (deprecated), fec0::/10"),
    ),
    (0xff00 << 112, 8, V6Range::Refused("multicast, ff00::/8")),
];

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    for (base, prefix, range) in V6_RANGES {
        let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
        if bits & mask != base & mask {
            continue;
        }
        return match range {
            V6Range::Refused(name) => Some(name),
            V6Range::EmbedsLast32 => refused_v4(Ipv4Addr::from(bits as u32)),
            V6Range::Embeds6to4 => refused_v4(Ipv4Addr::from((bits >> 80) as u32)),
        };
    }
    None
}

/// One entry of `CAIRN_EGRESS_ALLOW`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// An address or a CIDR. With a port, it allows only URLs that name that address
    /// literally with that port: a name's resolved addresses carry no port to compare.
    Net { net: IpNet, port: Option<u16> },
    /// A host name, and whatever it resolves to; with a port, on that port only.
    Host { name: String, port: Option<u16> },
}

impl FromStr for AllowEntry {
    type Err = EgressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let raw = s.trim();
        let bad = || EgressError::BadEntry(raw.to_owned());
        if raw.is_empty() {
            return Err(bad());
        }
        if let Ok(net) = raw.parse::<IpNet>() {
            return Ok(AllowEntry::Net {
                net: net.trunc(),
                port: None,
            });
        }
        let unbracketed = raw
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(raw);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(AllowEntry::Net {
                net: IpNet::from(ip.to_canonical()),
                port: None,
            });
        }
        if let Ok(addr) = raw.parse::<SocketAddr>() {
            return Ok(AllowEntry::Net {
                net: IpNet::from(addr.ip().to_canonical()),
                port: Some(addr.port()),
            });
        }
        let (name, port) = match raw.rsplit_once(':') {
            Some((name, port)) => (name, Some(port.parse::<u16>().map_err(|_| bad())?)),
            None => (raw, None),
        };
        let name = normalize_host(name).ok_or_else(bad)?;
        Ok(AllowEntry::Host { name, port })
    }
}

/// What `CAIRN_EGRESS_ALLOW` allows beyond public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressAllow {
    entries: Vec<AllowEntry>,
}

impl EgressAllow {
    /// Parses comma-separated (or already split) entries; empty ones are ignored.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<EgressAllow, EgressError> {
        let entries = items
            .iter()
            .flat_map(|s| s.as_ref().split(','))
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EgressAllow { entries })
    }

    /// Loopback (`127.0.0.0/8`, `::1`), which `cairn dev` allows.
    pub fn loopback() -> [AllowEntry; 2] {
        [
            AllowEntry::Net {
                net: IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
                port: None,
            },
            AllowEntry::Net {
                net: IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                port: None,
            },
        ]
    }

    pub fn push(&mut self, entry: AllowEntry) {
        if !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }

    /// Whether `ip`, named literally in a URL with `port`, is allowed.
    fn allows_literal(&self, ip: IpAddr, port: u16) -> bool {
        self.entries.iter().any(|e| match e {
            AllowEntry::Net { net, port: p } => net.contains(&ip) && p.is_none_or(|p| p == port),
            AllowEntry::Host { .. } => false,
        })
    }

    /// Whether `ip`, which a name resolved to, is allowed (port-less entries only).
    fn allows_resolved(&self, ip: IpAddr) -> bool {
        self.entries.iter().any(|e| match e {
            AllowEntry::Net { net, port: None } => net.contains(&ip),
            _ => false,
        })
    }

    /// The ports a host name is allowed on: `None` when the name is not listed,
    /// `Some([])` when it is listed without a port (any port).
    fn host_ports(&self, name: &str) -> Option<Vec<u16>> {
        let mut listed = false;
        let mut ports = Vec::new();
        for e in &self.entries {
            if let AllowEntry::Host { name: n, port } = e
                && n == name
            {
                match port {
                    None => return Some(Vec::new()),
                    Some(p) => {
                        listed = true;
                        ports.push(*p);
                    }
                }
            }
        }
        listed.then_some(ports)
    }
}

/// Whether `host` (as the URL spells it) matches an `allowed_hosts` pattern: a host name
/// or an address, exactly, or `*.example.com` for any name below `example.com`.
pub fn host_matches(pattern: &str, host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => match pattern.strip_prefix("*.") {
            Some(suffix) => {
                d.len() > suffix.len() && d.ends_with(suffix) && {
                    d.as_bytes()[d.len() - suffix.len() - 1] == b'.'
                }
            }
            None => pattern == *d,
        },
        url::Host::Ipv4(ip) => pattern.parse::<IpAddr>().ok() == Some(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => {
            pattern
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
                == Some(IpAddr::V6(*ip))
        }
    }
}

/// The policy one step client enforces: the operator's allow list and, when a step
/// names them, its `allowed_hosts`.
#[derive(Debug, Default)]
pub struct Rules {
    allow: EgressAllow,
    /// Empty: no narrowing.
    allowed_hosts: Vec<String>,
}

impl Rules {
    pub fn new(allow: EgressAllow, allowed_hosts: Vec<String>) -> Rules {
        Rules {
            allow,
            allowed_hosts,
        }
    }

    /// Everything that can be decided from the URL alone: the scheme, `allowed_hosts`,
    /// an IP-literal host, and the port of a host the allow list names with one. A
    /// host name's addresses are checked when it is resolved, at connect time.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EgressError::Scheme(url.scheme().to_owned()));
        }
        let host = url.host().ok_or(EgressError::NoHost)?;
        let port = url.port_or_known_default().unwrap_or(80);
        if !self.allowed_hosts.is_empty()
            && !self.allowed_hosts.iter().any(|p| host_matches(p, &host))
        {
            return Err(EgressError::NotInAllowedHosts {
                host: host.to_string(),
                allowed: self.allowed_hosts.join(", "),
            });
        }
        let ip = match host {
            url::Host::Ipv4(ip) => IpAddr::V4(ip),
            url::Host::Ipv6(ip) => IpAddr::V6(ip),
            url::Host::Domain(name) => {
                return match self.allow.host_ports(name) {
                    Some(ports) if !ports.is_empty() && !ports.contains(&port) => {
                        Err(EgressError::WrongPort {
                            host: name.to_owned(),
                            port,
                            allowed: ports
                                .iter()
                                .map(u16::to_string)
                                .collect::<Vec<_>>()
                                .join(", "),
                        })
                    }
                    _ => Ok(()),
                };
            }
        };
        match refused_range(ip) {
            Some(range) if !self.allow.allows_literal(ip.to_canonical(), port) => {
                Err(EgressError::Refused { address: ip, range })
            }
            _ => Ok(()),
        }
    }

    /// The addresses `name` resolved to that a step may connect to; an error naming the
    /// first refused one when there are none.
    pub fn check_resolved(
        &self,
        name: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, EgressError> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !self.allowed_hosts.is_empty()
            && !self
                .allowed_hosts
                .iter()
                .any(|p| host_matches(p, &url::Host::Domain(&name)))
        {
            return Err(EgressError::NotInAllowedHosts {
                host: name,
                allowed: self.allowed_hosts.join(", "),
            });
        }
        // A listed name is trusted with whatever it resolves to; its port was checked
        // with the URL.
        if self.allow.host_ports(&name).is_some() {
            return Ok(addrs);
        }
        let mut refused = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match refused_range(a.ip()) {
                None => true,
                Some(_) if self.allow.allows_resolved(a.ip().to_canonical()) => true,
                Some(range) => {
                    refused.get_or_insert(EgressError::Refused {
                        address: a.ip(),
                        range,
                    });
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some(e)) => Err(e),
            (true, None) => Err(EgressError::Resolve {
                host: name,
                message: "no addresses".into(),
            }),
        }
    }
}

/// A DNS resolver that answers only with addresses the step may connect to.
struct EgressResolver {
    rules: Arc<Rules>,
}

impl Resolve for EgressResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = self.rules.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| EgressError::Resolve {
                    host: host.clone(),
                    message: e.to_string(),
                })?
                .collect();
            let addrs = rules.check_resolved(&host, addrs)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A client whose every connection and redirect obeys `rules`.
fn build_client(rules: Arc<Rules>) -> Result<reqwest::Client, EgressError> {
    let redirect_rules = rules.clone();
    let redirect = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(EgressError::TooManyRedirects);
        }
        match redirect_rules.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(e) => {
                let to = redact(attempt.url());
                attempt.error(EgressError::Redirected {
                    to,
                    refused: Box::new(e),
                })
            }
        }
    });
    reqwest::Client::builder()
        .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
        // See the module docs: a proxy would resolve and connect past the policy.
        .no_proxy()
        .dns_resolver(Arc::new(EgressResolver { rules }))
        .redirect(redirect)
        .build()
        .map_err(|e| EgressError::Client(e.without_url().to_string()))
}

/// The HTTP clients of a worker's `http` steps: one for steps without
/// `allowed_hosts`, and one per distinct `allowed_hosts` list (each client's resolver
/// and redirect policy carry the list). Connection pools live in the clients, so they
/// are kept and shared.
pub struct StepHttp {
    allow: EgressAllow,
    clients: Mutex<HashMap<Vec<String>, StepClient>>,
}

/// A client and the rules it enforces (checked again on the URL before sending).
#[derive(Clone)]
pub struct StepClient {
    pub client: reqwest::Client,
    pub rules: Arc<Rules>,
}

impl StepHttp {
    pub fn new(allow: EgressAllow) -> StepHttp {
        StepHttp {
            allow,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for a step with these `allowed_hosts` (empty: no narrowing).
    pub fn client(&self, allowed_hosts: &[String]) -> Result<StepClient, EgressError> {
        if let Some(c) = self
            .clients
            .lock()
            .ok()
            .and_then(|m| m.get(allowed_hosts).cloned())
        {
            return Ok(c);
        }
        let rules = Arc::new(Rules::new(self.allow.clone(), allowed_hosts.to_vec()));
        let client = StepClient {
            client: build_client(rules.clone())?,
            rules,
        };
        if let Ok(mut m) = self.clients.lock()
            && (m.len() < NARROWED_CLIENTS_KEPT || allowed_hosts.is_empty())
        {
            m.insert(allowed_hosts.to_vec(), client.clone());
        }
        Ok(client)
    }
}

/// A URL as errors and logs show it: `scheme://host[:port]/path`, without the
/// userinfo, query or fragment, which may carry credentials.
pub fn redact(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// The egress error somewhere in `e`'s chain of sources, if the policy refused.
pub fn find_egress_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<EgressError>() {
            return Some(found);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classification_table() {
        let refused = [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.255",
            "100.100.100.200",
            "169.254.169.254",
            "169.254.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "168.63.129.16",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:0:7f00:1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "3fff::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
        ];
        for a in refused {
            assert!(refused_range(ip(a)).is_some(), "{a} must be refused");
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "169.253.255.255",
            "11.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81c::200e",
            "2001:4860:4860::8888",
        ];
        for a in public {
            assert_eq!(refused_range(ip(a)), None, "{a} is public");
        }
        assert_eq!(
            refused_range(ip("127.0.0.1")),
            Some("loopback, 127.0.0.0/8")
        );
        assert_eq!(
            refused_range(ip("::ffff:169.254.169.254")),
            Some("link-local and cloud metadata, 169.254.0.0/16")
        );
    }

    #[test]
    fn allow_entries_parse() {
        let e = |s: &str| s.parse::<AllowEntry>().unwrap();
        assert_eq!(
            e("10.0.0.0/8"),
            AllowEntry::Net {
                net: "10.0.0.0/8".parse().unwrap(),
                port: None
            }
        );
        assert_eq!(
            e("10.1.2.3/8"),
            AllowEntry::Net {
                net: "10.0.0.0/8".parse().unwrap(),
                port: None
            }
        );
        assert_eq!(
            e("127.0.0.1:8080"),
            AllowEntry::Net {
                net: "127.0.0.1/32".parse().unwrap(),
                port: Some(8080)
            }
        );
        assert_eq!(
            e("[::1]:80"),
            AllowEntry::Net {
                net: "::1/128".parse().unwrap(),
                port: Some(80)
            }
        );
        assert_eq!(
            e("::1"),
            AllowEntry::Net {
                net: "::1/128".parse().unwrap(),
                port: None
            }
        );
        assert_eq!(
            e("Internal.Example.com."),
            AllowEntry::Host {
                name: "internal.example.com".into(),
                port: None
            }
        );
        assert_eq!(
            e("svc:9000"),
            AllowEntry::Host {
                name: "svc".into(),
                port: Some(9000)
            }
        );
        for bad in ["", "http://x/", "a b", "svc:port", "*.example.com", "x@y"] {
            assert!(bad.parse::<AllowEntry>().is_err(), "{bad:?}");
        }
        let list = EgressAllow::parse(&["10.0.0.0/8, svc", "", "::1"]).unwrap();
        assert_eq!(list.entries().len(), 3);
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn urls_are_checked_before_connecting() {
        let none = Rules::default();
        for refused in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "https://[fe80::1]/",
        ] {
            assert!(
                matches!(
                    none.check_url(&url(refused)),
                    Err(EgressError::Refused { .. })
                ),
                "{refused}"
            );
        }
        assert!(matches!(
            none.check_url(&url("file:///etc/passwd")),
            Err(EgressError::Scheme(s)) if s == "file"
        ));
        assert!(matches!(
            none.check_url(&url("gopher://example.com/")),
            Err(EgressError::Scheme(_))
        ));
        assert!(none.check_url(&url("https://8.8.8.8/")).is_ok());
        // Names are checked when resolved.
        assert!(none.check_url(&url("http://localhost/")).is_ok());

        let allow = EgressAllow::parse(&["127.0.0.1:8080", "10.0.0.0/8", "svc:9000"]).unwrap();
        let rules = Rules::new(allow, vec![]);
        assert!(rules.check_url(&url("http://127.0.0.1:8080/")).is_ok());
        assert!(rules.check_url(&url("http://127.0.0.1:8081/")).is_err());
        assert!(rules.check_url(&url("http://10.9.8.7/")).is_ok());
        assert!(rules.check_url(&url("http://[::ffff:10.9.8.7]/")).is_ok());
        assert!(rules.check_url(&url("http://svc:9000/")).is_ok());
        assert!(matches!(
            rules.check_url(&url("http://svc:9001/")),
            Err(EgressError::WrongPort { .. })
        ));

        let narrow = Rules::new(
            EgressAllow::default(),
            vec!["api.example.com".into(), "*.example.org".into()],
        );
        assert!(narrow.check_url(&url("https://api.example.com/x")).is_ok());
        assert!(narrow.check_url(&url("https://a.b.example.org/x")).is_ok());
        assert!(matches!(
            narrow.check_url(&url("https://example.org/")),
            Err(EgressError::NotInAllowedHosts { .. })
        ));
        assert!(matches!(
            narrow.check_url(&url("https://evilexample.org/")),
            Err(EgressError::NotInAllowedHosts { .. })
        ));
        assert!(matches!(
            narrow.check_url(&url("https://8.8.8.8/")),
            Err(EgressError::NotInAllowedHosts { .. })
        ));
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let a = |s: &str| SocketAddr::new(ip(s), 0);
        let none = Rules::default();
        assert!(matches!(
            none.check_resolved("localhost", vec![a("127.0.0.1"), a("::1")]),
            Err(EgressError::Refused { .. })
        ));
        // Only the public answer of a mixed (rebinding) answer is used.
        assert_eq!(
            none.check_resolved("mixed.example", vec![a("10.0.0.1"), a("8.8.8.8")])
                .unwrap(),
            vec![a("8.8.8.8")]
        );
        // A port-specific address entry does not apply to resolved names.
        let by_port = Rules::new(EgressAllow::parse(&["127.0.0.1:80"]).unwrap(), vec![]);
        assert!(
            by_port
                .check_resolved("localhost", vec![a("127.0.0.1")])
                .is_err()
        );
        let cidr = Rules::new(EgressAllow::parse(&["127.0.0.0/8"]).unwrap(), vec![]);
        assert_eq!(
            cidr.check_resolved("localhost", vec![a("127.0.0.1"), a("::1")])
                .unwrap(),
            vec![a("127.0.0.1")]
        );
        let named = Rules::new(EgressAllow::parse(&["svc"]).unwrap(), vec![]);
        assert!(named.check_resolved("SVC.", vec![a("10.1.1.1")]).is_ok());
    }
}
