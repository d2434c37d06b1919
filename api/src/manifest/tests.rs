//! The manifest parser against good and bad files.

use super::*;

fn dir_with_component() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hello.wasm"), b"\0asm fake").expect("write");
    let manifest = dir.path().join("app.toml");
    (dir, manifest)
}

fn parse_err(text: &str) -> ManifestErrors {
    let (_dir, path) = dir_with_component();
    parse(&path, text, "default").expect_err("should fail")
}

const GOOD: &str = r#"
[[deployment]]
name = "hello"
labels = { app = "hello" }
replicas = 2
component = "hello.wasm"
env = { GREETING = "hi" }

[[service]]
name = "hello"
selector = { app = "hello" }
host = "hello.local"
"#;

#[test]
fn good_manifest_becomes_objects() {
    let (_dir, path) = dir_with_component();
    let m = parse(&path, GOOD, "default").expect("valid");
    assert_eq!(m.objects.len(), 2);
    assert_eq!(m.components.len(), 1);
    let d: Deployment = m.objects[0].typed().expect("typed");
    assert_eq!(d.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(d.spec.replicas, 2);
    assert_eq!(d.spec.template.component, m.components[0].digest);
    assert_eq!(d.spec.template.memory, DEFAULT_MEMORY);
    for obj in &m.objects {
        validate::validate_object(obj).expect("server validation agrees");
    }
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = parse_err("[[deployment]]\nname = \"hello\ncomponent = \"x\"\n");
    assert_eq!(e.0[0].line, 2, "{e}");
    assert!(e.to_string().contains("app.toml:2:"), "{e}");
}

#[test]
fn unknown_key_suggests_the_nearest() {
    let e =
        parse_err("[[deployment]]\nname = \"hello\"\nreplcas = 2\ncomponent = \"hello.wasm\"\n");
    let text = e.to_string();
    assert_eq!((e.0[0].line, e.0[0].column), (3, 1), "{text}");
    assert!(
        text.contains("unknown key `replcas` in [[deployment]]"),
        "{text}"
    );
    assert!(text.contains("did you mean `replicas`?"), "{text}");
}

#[test]
fn unknown_kind_suggests_the_nearest() {
    let e = parse_err("[[deploymnet]]\nname = \"x\"\n");
    assert!(e.to_string().contains("did you mean `deployment`?"), "{e}");
}

#[test]
fn bad_quantity_points_at_the_value() {
    let e = parse_err(
        "[[deployment]]\nname = \"hello\"\ncomponent = \"hello.wasm\"\ncpu = \"12 parsecs\"\n",
    );
    let err = &e.0[0];
    assert_eq!((err.line, err.column), (4, 7), "{e}");
    assert!(err.message.contains("12 parsecs"), "{e}");
    assert!(err.message.contains("250m"), "{e}");
}

#[test]
fn missing_component_names_the_path() {
    let e = parse_err("[[deployment]]\nname = \"hello\"\ncomponent = \"nope.wasm\"\n");
    let err = &e.0[0];
    assert_eq!((err.line, err.column), (3, 13), "{e}");
    assert!(err.message.contains("nope.wasm"), "{e}");
    assert!(err.help.as_deref().unwrap_or("").contains("build"), "{e}");
}

#[test]
fn duplicate_names_are_rejected() {
    let e = parse_err(
        "[[service]]\nname = \"a\"\nselector = { app = \"a\" }\n[[service]]\nname = \"a\"\nselector = { app = \"a\" }\n",
    );
    let err = &e.0[0];
    assert_eq!(err.line, 5, "{e}");
    assert!(err.message.contains("duplicate service \"a\""), "{e}");
    assert!(err.message.contains("line 2"), "{e}");
}

#[test]
fn bad_name_and_bad_enum() {
    let e = parse_err("[[deployment]]\nname = \"Hello_World\"\ncomponent = \"hello.wasm\"\n");
    assert_eq!(e.0[0].line, 2, "{e}");
    let e = parse_err(
        "[[deployment]]\nname = \"h\"\ncomponent = \"hello.wasm\"\nworld = \"browser\"\n",
    );
    assert_eq!(e.0[0].line, 4, "{e}");
    assert!(e.to_string().contains("http"), "{e}");
}

#[test]
fn a_registry_component_is_kept_as_written_and_a_bad_one_is_located() {
    let (_dir, path) = dir_with_component();
    let good = "[[deployment]]\nname = \"a\"\ncomponent = \"oci://127.0.0.1:5000/hello:v1\"\n";
    let m = parse(&path, good, "default").expect("valid");
    assert!(m.components.is_empty(), "nothing to upload");
    let d: Deployment = m.objects[0].typed().expect("typed");
    assert_eq!(d.spec.template.component, "oci://127.0.0.1:5000/hello:v1");

    let e = parse_err("[[deployment]]\nname = \"a\"\ncomponent = \"oci://127.0.0.1:5000/Hello\"\n");
    let err = &e.0[0];
    assert_eq!((err.line, err.column), (3, 13), "{e}");
    assert!(err.message.contains("lowercase"), "{e}");
}
