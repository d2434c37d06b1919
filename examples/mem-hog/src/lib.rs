//! `mem-hog`: an `http` component that allocates (and touches) 1 MiB after
//! another until something stops it. The node traps it at the pod's memory
//! budget (500), records why in the pod's status, and nothing else notices.

use reef_sdk::{Request, Response};

fn handle(_req: Request) -> Response {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Filled, not just reserved, so the pages are really used.
        hoard.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&hoard);
    }
}

reef_sdk::http_handler!(handle);
