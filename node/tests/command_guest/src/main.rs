//! Test command for `node/tests/runtime.rs`: `argv[1]` says what to do.

use std::io::Write as _;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(1) {
        "spin" => loop {
            std::hint::black_box(());
        },
        // wasi:cli/exit's exit-with-code: the code reaches the host.
        "exit" => wasip2::cli::exit::exit_with_code(arg(2).parse().unwrap_or(1)),
        // Rust's std maps any non-zero code to `exit(err)`: the host sees 1.
        "exit-std" => std::process::exit(arg(2).parse().unwrap_or(1)),
        "panic" => panic!("asked to panic"),
        "alloc" => {
            let mib: usize = arg(2).parse().unwrap_or(1);
            let block = vec![1u8; mib << 20];
            println!("allocated {} bytes", std::hint::black_box(block).len());
        }
        "print" => {
            println!("argv: {}", args.join(" "));
            eprintln!("to stderr");
            let _ = std::io::stdout().flush();
        }
        "files" => {
            // The scratch dir is writable; nothing else exists.
            std::fs::write("/tmp/hello.txt", "from the guest").expect("write scratch");
            let back = std::fs::read_to_string("/tmp/hello.txt").expect("read scratch");
            let outside = std::fs::read_to_string("/etc/passwd").map(|_| "readable".to_string());
            println!("scratch: {back}; /etc/passwd: {outside:?}");
        }
        other => {
            eprintln!("unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}
