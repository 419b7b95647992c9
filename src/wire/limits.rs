//! Limits on what a peer may make this node allocate, checked before the allocation.
//!
//! Every size a peer declares — a frame's length, a list's element count, a bignum's byte count,
//! a distribution header's atom count — is compared with these limits (and with the bytes
//! actually present) before anything is reserved for it. The defaults suit any BEAM client of
//! the protocol; `ash-gen-server start` takes a flag for each (see docs/PROTOCOL.md, "Limits").
//!
//! What a violation does depends on whether a caller can be told:
//!
//! - a frame longer than [`Limits::max_frame_bytes`], or a distribution header listing more than
//!   [`Limits::max_atom_cache_entries`] atoms, closes the connection (the stream cannot be read
//!   further), with one logged reason;
//! - a message nested deeper than [`Limits::max_term_depth`], with a list, tuple or map longer
//!   than [`Limits::max_list_length`], or with a bignum longer than [`Limits::max_bignum_bytes`]
//!   is decoded with the offending parts cut off (never allocated): a call is answered
//!   `{error, {bad_request, Why}}`, anything else is dropped with a log line;
//! - a request with more than [`Limits::max_records_per_request`] records is answered
//!   `{error, {bad_request, Why}}` before its records are built.

/// The limits of one node (every connection shares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted, in bytes (its 4-byte length prefix excluded).
    pub max_frame_bytes: usize,
    /// Deepest nesting of tuples, lists and maps in one term.
    pub max_term_depth: usize,
    /// Most atoms one distribution header may list (the protocol allows 255).
    pub max_atom_cache_entries: usize,
    /// Most elements in one list or tuple, or pairs in one map.
    pub max_list_length: usize,
    /// Largest bignum, in bytes of magnitude.
    pub max_bignum_bytes: usize,
    /// Most records one request may carry (`bulk_create`).
    pub max_records_per_request: usize,
}

impl Limits {
    /// Default largest frame: 64 MiB.
    pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
    /// Default deepest nesting: room for a filter of the protocol's 256 levels inside the
    /// `{'$gen_call', From, {query, R, #{filter => ...}}}` around it.
    pub const DEFAULT_MAX_TERM_DEPTH: usize = 300;
    /// The most nesting the node's 8 MiB stacks take safely (the decoder and everything that
    /// walks a value recurse).
    pub const MAX_TERM_DEPTH_CEILING: usize = 2000;
    /// Default and largest atoms per distribution header: what the protocol allows.
    pub const DEFAULT_MAX_ATOM_CACHE_ENTRIES: usize = 255;
    /// Default most elements in one list, tuple or map: 1,048,576.
    pub const DEFAULT_MAX_LIST_LENGTH: usize = 1 << 20;
    /// Default largest bignum: 4 KiB of magnitude (32,768 bits).
    pub const DEFAULT_MAX_BIGNUM_BYTES: usize = 4096;
    /// Default most records per request: 100,000.
    pub const DEFAULT_MAX_RECORDS_PER_REQUEST: usize = 100_000;

    /// Checks that every limit is usable: at least 1, the depth at most
    /// [`Self::MAX_TERM_DEPTH_CEILING`], atoms per header at most 255, frames at least 64 bytes
    /// (a handshake-sized message) and below 4 GiB.
    pub fn validate(&self) -> Result<(), String> {
        let checks: [(&str, usize, usize, usize); 6] = [
            (
                "max-frame-bytes",
                self.max_frame_bytes,
                64,
                u32::MAX as usize,
            ),
            (
                "max-term-depth",
                self.max_term_depth,
                8,
                Self::MAX_TERM_DEPTH_CEILING,
            ),
            (
                "max-atom-cache-entries",
                self.max_atom_cache_entries,
                1,
                Self::DEFAULT_MAX_ATOM_CACHE_ENTRIES,
            ),
            ("max-list-length", self.max_list_length, 1, usize::MAX),
            ("max-bignum-bytes", self.max_bignum_bytes, 8, usize::MAX),
            (
                "max-records-per-request",
                self.max_records_per_request,
                1,
                usize::MAX,
            ),
        ];
        for (name, value, min, max) in checks {
            if value < min || value > max {
                return Err(format!(
                    "--{name} must be between {min} and {max}, got {value}"
                ));
            }
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            max_term_depth: Self::DEFAULT_MAX_TERM_DEPTH,
            max_atom_cache_entries: Self::DEFAULT_MAX_ATOM_CACHE_ENTRIES,
            max_list_length: Self::DEFAULT_MAX_LIST_LENGTH,
            max_bignum_bytes: Self::DEFAULT_MAX_BIGNUM_BYTES,
            max_records_per_request: Self::DEFAULT_MAX_RECORDS_PER_REQUEST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let bad = Limits {
            max_term_depth: 100_000,
            ..Limits::default()
        };
        assert!(bad.validate().unwrap_err().contains("--max-term-depth"));
        let bad = Limits {
            max_list_length: 0,
            ..Limits::default()
        };
        assert!(bad.validate().unwrap_err().contains("--max-list-length"));
    }
}
