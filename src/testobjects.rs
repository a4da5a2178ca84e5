//! Test variants of the microseg object (feature `test-hooks`), built from
//! `bpf/tests/`.

use crate::embedded_object;
use crate::kernel::object::Embedded;

/// Same maps and programs, other bytes: for the atomic program swap.
pub static MICROSEG_CODE: Embedded = embedded_object!("test-microseg_code.bpf.o");

/// Other map capacities (4 NICs, 4096 pairs): for the layout change and
/// capacity tests.
pub static MICROSEG_LAYOUT: Embedded = embedded_object!("test-microseg_layout.bpf.o");

/// Another layout and code the verifier rejects: the old state must survive.
pub static MICROSEG_BROKEN: Embedded = embedded_object!("test-microseg_broken.bpf.o");

/// Ring buffer records as map values, for the layout test (never loaded).
pub static RECORD_TYPES: Embedded = embedded_object!("test-record_types.bpf.o");
