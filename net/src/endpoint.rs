//! Endpoint strings: `HOST:PORT` as users write them, `tcp://HOST:PORT` as
//! libzmq wants them.

/// `HOST:PORT` → `tcp://HOST:PORT`; anything already holding `://` is kept.
pub fn tcp(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("tcp://{addr}")
    }
}

/// The host part of an endpoint (`tcp://h:1` → `h`).
pub fn host_of(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.rsplit_once(':').map_or(rest, |(h, _)| h)
}

/// The port part of an endpoint (`tcp://h:1` → `1`).
pub fn port_of(endpoint: &str) -> &str {
    endpoint.rsplit_once(':').map_or("", |(_, p)| p)
}

/// Rewrites a bound endpoint whose host is a wildcard (`0.0.0.0`, `*`, `[::]`)
/// to use `host` instead, so it can be handed to someone who must connect.
pub fn reachable(bound: &str, host: &str) -> String {
    match host_of(bound) {
        "0.0.0.0" | "*" | "[::]" | "::" => format!("tcp://{host}:{}", port_of(bound)),
        _ => tcp(bound),
    }
}

/// A peer may advertise several endpoints, comma-separated (say, its name on
/// a container network and a port published on the host). Picks the first
/// whose host resolves from here, as a `tcp://` endpoint.
pub fn pick_endpoint(advertised: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    advertised
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .find_map(|e| {
            let ep = tcp(e);
            let hostport = ep.trim_start_matches("tcp://");
            hostport
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .map(|_| ep.clone())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_helpers() {
        assert_eq!(tcp("a:1"), "tcp://a:1");
        assert_eq!(tcp("tcp://a:1"), "tcp://a:1");
        assert_eq!(host_of("tcp://tracker:5556"), "tracker");
        assert_eq!(port_of("tcp://0.0.0.0:5556"), "5556");
        assert_eq!(
            reachable("tcp://0.0.0.0:5556", "tracker"),
            "tcp://tracker:5556"
        );
        assert_eq!(
            reachable("tcp://127.0.0.1:9", "tracker"),
            "tcp://127.0.0.1:9"
        );
    }

    #[test]
    fn picks_the_first_resolvable_endpoint() {
        assert_eq!(
            pick_endpoint("no-such-host.invalid:7001, 127.0.0.1:7001").as_deref(),
            Some("tcp://127.0.0.1:7001")
        );
        assert_eq!(
            pick_endpoint("tcp://127.0.0.1:9").as_deref(),
            Some("tcp://127.0.0.1:9")
        );
        assert_eq!(pick_endpoint("no-such-host.invalid:1"), None);
        assert_eq!(pick_endpoint(""), None);
    }
}
