//! `cpu-hog`: an `http` component whose requests spin the CPU forever. The
//! node interrupts each at the pod's `timeout` (504) and keeps serving other
//! requests meanwhile, to this pod (`/health` answers at once) and to the
//! pods beside it.

use reef_sdk::{Request, Response};

fn handle(req: Request) -> Response {
    if req.path() == "/health" {
        return Response::text(200, "still here\n");
    }
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

reef_sdk::http_handler!(handle);
