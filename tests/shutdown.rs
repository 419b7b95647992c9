//! The node binary's shutdown over a real connection: a peer that keeps sending after the
//! node's last reply is not reset (a reset can make a peer lose replies it has not read yet).

mod common;

use ash_gen_server::term::{Value, parse_term};
use common::{NodeProc, Peer};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

fn t(s: &str) -> Value {
    parse_term(s).unwrap()
}

/// After SIGTERM the node answers and half-closes; the peer, having read the node's FIN, still
/// sends a call (as a peer does that has not seen the FIN yet) and then closes its side. The node
/// reads and discards that call, closes once it sees the peer's FIN, and exits 0: the
/// connection ends without a reset. (Before, the node closed right after its FIN, and the call
/// arriving at the closed socket was answered with a reset.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_still_sending_after_the_last_reply_is_not_reset() {
    let mut node = NodeProc::start("shutdown_linger", &[], "info");
    let name = format!("linger_peer_{}@127.0.0.1", std::process::id());
    let mut peer = Peer::connect(node.port, &name, true).await.unwrap();
    assert_eq!(peer.call(&t("ping"), WAIT).await.unwrap(), t("pong"));
    let pid = node.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, peer.stream.read_to_end(&mut rest))
        .await
        .expect("the node closes its side after SIGTERM")
        .expect("the node's side ends in a FIN, not a reset");
    // Still sending after the FIN, then closing our side.
    peer.queue_call("ash_gen_server", &t("ping"));
    peer.flush().await.unwrap();
    let shut = peer.stream.shutdown().await;
    let code = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = node.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0));
    let error = peer.stream.take_error().unwrap();
    assert!(
        shut.is_ok() && error.is_none(),
        "the node reset the connection: shutdown {shut:?}, socket error {error:?}"
    );
}
