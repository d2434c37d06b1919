//! `cpu-hog`: an `http` component that never answers: every request spins
//! the CPU forever. The node interrupts it at the pod's `timeout` (504) and
//! keeps serving the pods beside it meanwhile.

use reef_sdk::{Request, Response};

fn handle(_req: Request) -> Response {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

reef_sdk::http_handler!(handle);
