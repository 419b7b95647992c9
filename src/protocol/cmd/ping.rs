//! `ping`: answers `pong`.

use crate::protocol::caller::Caller;
use crate::protocol::reply;
use crate::protocol::service::Service;

/// Serves `ping`.
pub fn execute(svc: &Service, from: Caller) {
    svc.reply(&from, &reply::atom("pong"));
}
