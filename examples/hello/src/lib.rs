//! `hello`: the smallest reef HTTP component. Answers every request with
//! `"{GREETING} from reef! path={path}"`, `GREETING` coming from the pod's env
//! (default `hello`), so one component shows both env and routing at work.

use reef_sdk::{Request, Response};

fn handle(req: Request) -> Response {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".to_string());
    Response::text(
        200,
        format!("{greeting} from reef! path={}\n", req.path_with_query()),
    )
}

reef_sdk::http_handler!(handle);
