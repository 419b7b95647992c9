//! Property tests of every decoder that reads untrusted input, in-process: the term codec, the
//! frame reader, the atom cache header, distribution control messages, the text syntax and
//! request parsing. Arbitrary and mutated-valid inputs never panic, valid terms round-trip, and
//! no decode allocates more than a bounded multiple of its input (a counting allocator watches
//! this thread's allocations).
//!
//! `PROPTEST_CASES=N` runs more cases than the default.

use ash_gen_server::protocol::request::Request;
use ash_gen_server::term::{Atom, Pid, Value, parse_term};
use ash_gen_server::wire::atom_cache::{InCache, OutCache};
use ash_gen_server::wire::dist::{self, FrameWriter};
use ash_gen_server::wire::etf;
use ash_gen_server::wire::frame::FrameReader;
use ash_gen_server::wire::limits::Limits;
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// ---------------------------------------------------------------------------------------------
// A counting allocator: this thread's live bytes and their peak.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now)
            }
        });
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result and the most bytes it had allocated at once.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    let peak = PEAK.with(Cell::get) - base;
    (out, peak.max(0) as usize)
}

/// What a decode of `input` bytes may allocate: values cost tens of bytes per input byte at
/// most, plus room for the atom table growing.
fn budget(input: usize) -> usize {
    100 * input + 4 * 1024 * 1024
}

// ---------------------------------------------------------------------------------------------
// Strategies

fn atom_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just("ok"),
        Just("nil"),
        Just("true"),
        Just("id"),
        Just("Elixir.User"),
        Just("héllo"),
        Just("")
    ]
    .prop_map(|s| Value::Atom(Atom::new(s).unwrap()))
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        (0i64..300).prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        atom_strategy(),
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(|b| Value::binary(&b)),
        Just(parse_term("-123456789012345678901234567890123456789").unwrap()),
        (any::<u32>(), any::<u32>()).prop_map(|(id, serial)| Value::Pid(Box::new(Pid {
            node: Atom::new("a@127.0.0.1").unwrap(),
            id,
            serial,
            creation: 3,
        }))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::list),
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::tuple),
            proptest::collection::vec((atom_strategy(), inner.clone()), 0..6).prop_map(Value::map),
        ]
    })
}

fn encoded(v: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    etf::encode(v, &mut bytes);
    bytes
}

/// Byte-level mutations of valid bytes.
fn mutated(bytes: Vec<u8>, edits: Vec<(usize, u8, u8)>) -> Vec<u8> {
    let mut b = bytes;
    for (at, kind, byte) in edits {
        if b.is_empty() {
            b.push(byte);
            continue;
        }
        let i = at % b.len();
        match kind % 6 {
            0 => b[i] ^= 1 << (byte % 8),
            1 => b[i] = byte,
            2 => b.insert(i, byte),
            3 => {
                b.remove(i);
            }
            4 => b.truncate(i.max(1)),
            _ => {
                let end = (i + 4).min(b.len());
                for x in &mut b[i..end] {
                    *x = 0xff;
                }
            }
        }
    }
    b
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6)
}

/// Runs on a thread with the node's stack size (8 MiB), as decoding runs in the node.
fn on_node_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(8 * 1024 * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config())]

    #[test]
    fn etf_roundtrips_valid_terms(v in value()) {
        let bytes = encoded(&v);
        let (back, used) = etf::decode(&bytes).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(back, v);
    }

    #[test]
    fn etf_survives_arbitrary_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 0..512), versioned in any::<bool>()) {
        if versioned {
            bytes.insert(0, 131);
        }
        let len = bytes.len();
        let (_, peak) = peak_of(|| {
            let _ = etf::decode(&bytes);
            let _ = etf::decode_truncated(&bytes);
            let _ = etf::decode_body(&bytes, &[], false);
        });
        prop_assert!(peak <= budget(len), "{peak} bytes for {len} input bytes");
    }

    #[test]
    fn etf_survives_mutated_terms(v in value(), e in edits()) {
        let bytes = mutated(encoded(&v), e);
        let len = bytes.len();
        let (_, peak) = peak_of(|| {
            let _ = etf::decode(&bytes);
            let _ = etf::decode_truncated(&bytes);
        });
        prop_assert!(peak <= budget(len), "{peak} bytes for {len} input bytes");
    }

    #[test]
    fn etf_limits_are_enforced_before_allocating(n in 2usize..64, small in 1usize..8) {
        // A list of n elements, a bignum of n bytes, n levels: over tight limits, refused.
        let limits = Limits { max_list_length: small, max_bignum_bytes: 8, max_term_depth: 8, ..Limits::default() };
        let list = encoded(&Value::list((0..n as i64).map(Value::Int).collect()));
        let r = etf::decode_limited(&list, None, false, &limits);
        prop_assert_eq!(r.is_err(), n > small);
        let mut big = vec![131u8, 111];
        big.extend_from_slice(&(n as u32 + 8).to_be_bytes());
        big.push(0);
        big.extend(std::iter::repeat_n(1u8, n + 8));
        prop_assert_eq!(etf::decode_limited(&big, None, false, &limits).unwrap_err().reason, etf::BIGNUM_REASON);
        let (cut, _) = etf::decode_limited(&big, None, true, &limits).unwrap();
        prop_assert_eq!(cut, Value::Atom(Atom::new(etf::TOO_DEEP).unwrap()));
    }

    #[test]
    fn frame_reader_survives_arbitrary_streams(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let mut reader = FrameReader::new();
        let fed: usize = chunks.iter().map(Vec::len).sum();
        let (_, peak) = peak_of(|| {
            for chunk in &chunks {
                let space = reader.read_space();
                let n = chunk.len().min(space.len());
                space[..n].copy_from_slice(&chunk[..n]);
                reader.filled(n);
                while let Ok(Some(_)) = reader.next_frame() {}
            }
        });
        // The buffer grows with the bytes that arrive, never to a length prefix's claim.
        prop_assert!(peak <= budget(fed) + 256 * 1024, "{peak} bytes for {fed} bytes fed");
    }

    #[test]
    fn frame_reader_survives_mutated_frames(v in value(), cached in any::<bool>(), e in edits()) {
        let to = Pid { node: Atom::new("b@127.0.0.1").unwrap(), id: 1, serial: 0, creation: 1 };
        let mut w = FrameWriter::new(cached);
        w.send(&to, |tw| tw.term(&v));
        w.send(&to, |tw| tw.term(&v));
        let bytes = mutated(w.buf.clone(), e);
        on_node_stack(move || {
            let mut reader = FrameReader::new();
            let space = reader.read_space();
            let n = bytes.len().min(space.len());
            space[..n].copy_from_slice(&bytes[..n]);
            reader.filled(n);
            while let Ok(Some(_)) = reader.next_frame() {}
        });
    }

    #[test]
    fn atom_cache_headers_roundtrip(names in proptest::collection::vec("[a-z]{1,12}", 1..40)) {
        let mut out = OutCache::default();
        let mut incoming = InCache::default();
        let mut refs = Vec::new();
        for _ in 0..2 {
            let mut m = out.message();
            let atoms: Vec<Atom> = names.iter().map(|n| Atom::new(n).unwrap()).collect();
            for a in &atoms {
                m.index(*a);
            }
            let mut bytes = Vec::new();
            m.write_header(&mut bytes);
            incoming.read_header(&bytes[2..], &mut refs).unwrap();
            let mut uniq = Vec::new();
            for a in atoms {
                if !uniq.contains(&a) {
                    uniq.push(a);
                }
            }
            prop_assert_eq!(&refs, &uniq);
        }
    }

    #[test]
    fn atom_cache_survives_arbitrary_headers(bytes in proptest::collection::vec(any::<u8>(), 0..600), limit in 1usize..300) {
        let mut incoming = InCache::with_limit(limit);
        let mut refs = Vec::new();
        if let Ok(used) = incoming.read_header(&bytes, &mut refs) {
            prop_assert!(used <= bytes.len());
            prop_assert!(refs.len() <= limit.min(255));
        }
    }

    #[test]
    fn dist_decode_survives_arbitrary_and_mutated(v in value(), e in edits(), junk in proptest::collection::vec(any::<u8>(), 0..200)) {
        let to = Pid { node: Atom::new("b@127.0.0.1").unwrap(), id: 1, serial: 0, creation: 1 };
        let mut w = FrameWriter::new(false);
        w.reg_send(&to, Atom::new("ash_gen_server").unwrap(), |tw| tw.term(&v));
        // Without the length prefix and the pass-through byte.
        let valid = w.buf[5..].to_vec();
        prop_assert!(dist::decode(&valid, None).is_ok());
        let bytes = mutated(valid, e);
        let _ = dist::decode(&bytes, None);
        let _ = dist::decode_truncated(&bytes, None);
        let _ = dist::decode(&junk, None);
        let refs = [Atom::new("ok").unwrap()];
        let _ = dist::decode(&junk, Some(&refs));
    }

    #[test]
    fn text_parse_survives_arbitrary_input(s in "\\PC{0,200}") {
        let _ = parse_term(&s);
    }

    #[test]
    fn text_parse_survives_term_like_input(s in "[{}\\[\\]#=>,|<\"a-z0-9 .'_-]{0,200}") {
        let _ = parse_term(&s);
    }

    #[test]
    fn request_parse_survives_arbitrary_terms(tag in prop_oneof![Just("define"), Just("create"), Just("upsert"), Just("bulk_create"), Just("get"), Just("update"), Just("destroy"), Just("update_where"), Just("destroy_where"), Just("query"), Just("aggregate"), Just("whereis"), Just("keep_alive"), Just("subscribe"), Just("info"), Just("clear"), Just("fault"), Just("ping")], args in proptest::collection::vec(value(), 0..5)) {
        let mut items = vec![Value::Atom(Atom::new(tag).unwrap())];
        items.extend(args);
        let _ = Request::parse(&Value::tuple(items));
        let _ = Request::parse_with(&Value::tuple(vec![Value::Atom(Atom::new("bulk_create").unwrap()), Value::Atom(Atom::new("r").unwrap()), Value::list(vec![Value::map(vec![]); 3])]), 2)
            .map(|_| panic!("over the records limit"));
    }
}
