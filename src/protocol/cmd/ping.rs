//! `ping`: answers `pong`.

use crate::node::genserver::From;
use crate::protocol::reply;
use crate::protocol::service::Service;

/// Serves `ping`.
pub fn execute(svc: &Service, from: From) {
    svc.reply(&from, &reply::atom("pong"));
}
