//! The node as a library: a Rust program keeps records in an in-process node, with lifetimes,
//! through the typed API, and (with `--listen NAME@HOST`) lets BEAM nodes use the same records.
//!
//! ```sh
//! cargo run --example embedded
//! cargo run --example embedded -- --listen app@127.0.0.1   # then, from erl: ...
//! ```

use ash_gen_server::embedded::{ApiError, Definition, Embedded, Fields, Filter, Query};
use ash_gen_server::node::NodeConfig;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), ApiError> {
    let args: Vec<String> = std::env::args().collect();
    let db = match args.iter().position(|a| a == "--listen") {
        Some(i) => {
            let name = args.get(i + 1).expect("--listen NAME@HOST");
            let config = NodeConfig::new(
                name.parse().map_err(|e| ApiError::Name(format!("{e}")))?,
                std::env::var("ASH_GEN_SERVER_COOKIE").unwrap_or_else(|_| "embedded".into()),
            );
            Embedded::start(config).await?
        }
        None => Embedded::local("embedded@127.0.0.1")?,
    };

    db.define(
        "session",
        Definition::new(["id"])
            .inactivity_timeout(300)
            .identity("token", ["token"]),
    )
    .await?;
    for (id, user, age) in [(1, "ann", 41), (2, "bob", 17), (3, "cy", 65)] {
        db.create(
            "session",
            Fields::new()
                .with("id", id)
                .with("user", user)
                .with("age", age)
                .with("token", format!("t-{id}")),
        )
        .await?;
    }
    let adults = db
        .query(
            "session",
            Query::new().filter(Filter::gte("age", 18)).sort_desc("age"),
        )
        .await?;
    println!(
        "adults, oldest first: {:?}",
        adults.iter().map(|r| r.get("user")).collect::<Vec<_>>()
    );
    let bob = db
        .update(
            "session",
            Fields::new().with("id", 2),
            Fields::new().with("age", 18),
        )
        .await?;
    println!("bob is now {:?}", bob.get("age"));
    match db
        .create("session", Fields::new().with("id", 9).with("token", "t-1"))
        .await
    {
        Err(ApiError::Refused(reason)) => println!("a second t-1 token is refused: {reason:?}"),
        other => panic!("a duplicate identity must be refused, got {other:?}"),
    }

    // Untouched for 300 ms, the sessions expire (no expiry handler: the node removes them).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let left = db.query("session", Query::new()).await?;
    println!("sessions left after the inactivity timeout: {}", left.len());
    assert!(left.is_empty(), "every session expired");
    db.stop().await;
    Ok(())
}
