//! Properties of the outbound matcher (names) and the network policy
//! (addresses): they never panic on any input, a listed host matches only
//! itself at its port, and an address is judged the same in any spelling.

use proptest::prelude::*;
use reef_node::runtime::{Cidr, NetworkPolicy, OutboundPolicy};
use std::net::{IpAddr, Ipv4Addr};

fn host() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,8}(\\.[a-z][a-z0-9]{0,8}){0,3}"
}

proptest! {
    #[test]
    fn patterns_and_uris_never_panic(patterns in proptest::collection::vec(".{0,30}", 0..4), uri in ".{0,60}") {
        let _ = OutboundPolicy::new(&patterns);
        let policy = OutboundPolicy::lenient(&patterns);
        if let Ok(uri) = uri.parse::<http::Uri>() {
            let _ = policy.allows(&uri);
        }
    }

    #[test]
    fn a_listed_host_matches_only_itself_at_its_port(host in host(), port in 1u16..65535) {
        let policy = OutboundPolicy::new(&[format!("{host}:{port}")]).expect("valid");
        let allows = |uri: String| policy.allows(&uri.parse().expect("uri"));
        let checks = [
            (format!("http://{host}:{port}/x"), true),
            (format!("https://{}:{port}/", host.to_uppercase()), true),
            (format!("http://{host}:{}/", if port == 1 { 2 } else { port - 1 }), false),
            (format!("http://evil.{host}:{port}/"), false),
            (format!("http://{host}.evil:{port}/"), false),
            (format!("http://{host}x:{port}/"), false),
        ];
        for (uri, expected) in checks {
            let got = allows(uri.clone());
            prop_assert_eq!(got, expected, "{}", uri);
        }
    }

    #[test]
    fn a_wildcard_matches_below_never_the_apex(host in host(), sub in "[a-z]{1,8}") {
        let policy = OutboundPolicy::new(&[format!("*.{host}")]).expect("valid");
        let allows = |uri: String| policy.allows(&uri.parse().expect("uri"));
        let checks = [
            (format!("https://{sub}.{host}/"), true),
            (format!("https://{host}/"), false),
            (format!("https://{sub}{host}/"), false),
        ];
        for (uri, expected) in checks {
            let got = allows(uri.clone());
            prop_assert_eq!(got, expected, "{}", uri);
        }
    }

    #[test]
    fn ranges_never_panic(text in ".{0,45}") {
        let _ = text.parse::<Cidr>();
    }

    #[test]
    fn an_address_is_judged_the_same_however_written(a in any::<u8>(), b in any::<u8>(), c in any::<u8>(), d in any::<u8>()) {
        let v4 = Ipv4Addr::new(a, b, c, d);
        let policy = NetworkPolicy { allowed: vec!["10.0.0.0/8".parse().expect("cidr")], refused: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))] };
        let plain = policy.permits(IpAddr::V4(v4));
        let mapped = policy.permits(IpAddr::V6(v4.to_ipv6_mapped()));
        prop_assert_eq!(plain, mapped);
        let closed = a == 127 || (a == 169 && b == 254) || a == 0 || a >= 224 || (a, b, c, d) == (10, 0, 0, 1);
        if closed {
            prop_assert!(!plain, "{}", v4);
        }
    }
}
