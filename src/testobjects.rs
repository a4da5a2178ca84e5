//! Test variants of the microseg object (feature `test-hooks`), built from
//! `bpf/tests/`.

/// Same maps and programs, other bytes: for the atomic program swap.
pub static MICROSEG_CODE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/test-microseg_code.bpf.o"));

/// Other map capacities (4 NICs, 4096 pairs): for the layout change and
/// capacity tests.
pub static MICROSEG_LAYOUT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/test-microseg_layout.bpf.o"));

/// Another layout and code the verifier rejects: the old state must survive.
pub static MICROSEG_BROKEN: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/test-microseg_broken.bpf.o"));

/// Ring buffer records as map values, for the layout test (never loaded).
pub static RECORD_TYPES: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/test-record_types.bpf.o"));
