//! Elections among real member processes on loopback: who may win, and who
//! must not hold off the one that can.

mod common;

use common::control_plane::{metric, service, ControlPlane};
use common::eventually;
use std::time::Duration;

const SLOW: Duration = Duration::from_secs(120);

/// Two members of three are left, and the one that could win an election
/// holds entries the other lacks. The other's higher terms from campaigns it
/// cannot win must not keep the able one from leading (CI once saw term 133).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_behind_on_the_log_cannot_hold_off_the_one_that_can_win() {
    let mut cp = ControlPlane::start(3, &[]).await;
    let able = cp.leader().await;
    let (behind, third) = ((able + 1) % 3, (able + 2) % 3);

    // `behind` misses writes the other two commit; then the third is lost.
    cp.pause(behind);
    let client = cp.client_of(able);
    for i in 0..5 {
        client
            .put(&service(&format!("missed-{i}")), false)
            .await
            .expect("write while one member is frozen");
    }
    cp.kill(third);

    // With the leader frozen, `behind` campaigns alone, in vain, raising its
    // term past the leader's.
    let term_of = |text: &str| metric(text, "reef_store_term ");
    let leader_term = term_of(&cp.metrics(able).await.expect("metrics"));
    cp.pause(able);
    cp.resume(behind);
    eventually("the member behind to campaign", SLOW, || async {
        (term_of(&cp.metrics(behind).await?) > leader_term + 1).then_some(())
    })
    .await;
    cp.resume(able);

    let write = client.put(&service("after"), false).await;
    assert!(
        write.is_ok(),
        "no leader took over: {write:?}\n{}",
        cp.log_tail()
    );
    assert_eq!(
        cp.leader().await,
        able,
        "only the member with the longer log can win"
    );
}
