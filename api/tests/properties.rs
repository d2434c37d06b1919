//! Properties of the parsers every input from outside goes through: they never
//! panic, quantities and durations round-trip, and the CLI's manifest check
//! and the server's validation agree. Bounded: proptest's default case count.

use proptest::prelude::*;
use reef_api::manifest::{self, Components};
use reef_api::quantity::{Cpu, Memory, Timeout};
use reef_api::validate;
use std::path::Path;
use std::time::Duration;

proptest! {
    #[test]
    fn quantities_never_panic(text in ".{0,40}") {
        let _ = text.parse::<Cpu>();
        let _ = text.parse::<Memory>();
        let _ = text.parse::<Timeout>();
    }

    #[test]
    fn numeric_looking_quantities_never_panic(
        whole in "[0-9]{0,25}", frac in "[0-9]{0,25}", unit in "(m|Ki|Mi|Gi|Ti|k|K|M|G|T|ms|s|h|d|years|)"
    ) {
        for text in [format!("{whole}{unit}"), format!("{whole}.{frac}{unit}")] {
            let _ = text.parse::<Cpu>();
            let _ = text.parse::<Memory>();
            let _ = text.parse::<Timeout>();
        }
    }

    #[test]
    fn cpu_round_trips(millis in any::<u64>()) {
        let cpu = Cpu(millis);
        prop_assert_eq!(cpu.to_string().parse::<Cpu>(), Ok(cpu));
    }

    #[test]
    fn memory_round_trips(bytes in any::<u64>()) {
        let memory = Memory(bytes);
        prop_assert_eq!(memory.to_string().parse::<Memory>(), Ok(memory));
    }

    #[test]
    fn durations_round_trip(millis in 1u64..10_000_000_000) {
        let timeout = Timeout(Duration::from_millis(millis));
        prop_assert_eq!(timeout.to_string().parse::<Timeout>(), Ok(timeout));
    }

    #[test]
    fn outbound_patterns_never_panic(text in ".{0,60}") {
        let _ = validate::outbound_pattern(&text);
        let _ = validate::host_port(&text);
        let _ = validate::dns_subdomain(&text);
    }

    /// Any text: the manifest parser answers, never panics, and every error
    /// points into the file.
    #[test]
    fn manifests_never_panic_and_point_into_the_file(text in "(\\[\\[(deployment|service|tenant)\\]\\]\n|[a-z_]{1,12} = (\"[^\"\n]{0,20}\"|[0-9]{1,15}|\\{ [a-z]{1,5} = \"[a-z]{0,5}\" \\})\n|.{0,20}\n){0,12}") {
        match manifest::parse_with(Path::new("app.toml"), &text, "default", Components::Skip) {
            Ok(_) => {}
            Err(errors) => {
                let lines = text.lines().count().max(1);
                for e in errors.0 {
                    prop_assert!(e.line >= 1 && e.line <= lines + 1, "{e} in {lines} lines");
                    prop_assert!(e.column >= 1);
                }
            }
        }
    }

    /// What the CLI accepts, the server accepts: generated deployments and
    /// services with values around every limit.
    #[test]
    fn the_cli_and_the_server_agree(
        name in "[a-z][a-z0-9-]{0,60}[a-z0-9]",
        replicas in prop_oneof![0u32..20, 9_990u32..10_010, Just(u32::MAX)],
        cpu in prop_oneof![Just("100m".to_string()), Just("256".to_string()), Just("257".to_string()), "[0-9]{1,6}m"],
        memory in prop_oneof![Just("64Mi".to_string()), Just("4Gi".to_string()), Just("5Gi".to_string())],
        timeout in prop_oneof![Just("30s".to_string()), Just("1h".to_string()), Just("2h".to_string()), Just("300years".to_string())],
        labels in proptest::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..70),
        host in proptest::option::of("[a-z]{1,10}\\.local"),
        namespace in prop_oneof![Just("default"), Just("acme")],
    ) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k} = \"{v}\"")).collect();
        let host = host.map(|h| format!("host = \"{h}\"\n")).unwrap_or_default();
        let text = format!(
            "[[deployment]]\nname = \"{name}\"\nreplicas = {replicas}\ncomponent = \"sha256:{zeros}\"\ncpu = \"{cpu}\"\nmemory = \"{memory}\"\ntimeout = \"{timeout}\"\nlabels = {{ {labels} }}\n\n[[service]]\nname = \"{name}\"\nselector = {{ app = \"x\" }}\n{host}",
            zeros = "0".repeat(64),
            labels = labels.join(", "),
        );
        if let Ok(parsed) = manifest::parse_with(Path::new("app.toml"), &text, namespace, Components::Read) {
            for object in &parsed.objects {
                prop_assert!(
                    validate::validate_object(object).is_ok(),
                    "the CLI accepted what the server refuses: {:?}",
                    validate::validate_object(object)
                );
            }
        }
    }
}
