//! The one shape that crosses into C: a value tree (from `serde_json::Value`,
//! so every result is defined once, by its Rust type's serialisation)
//! encoded as a flat byte string that `glue.c` turns into Perl values.
//!
//! Encoding (integers little-endian u64 unless said):
//! `u` undef · `i` i64 · `U` u64 · `n` f64 · `s` len bytes (UTF-8) ·
//! `a` count items · `h` count (len key-bytes, item)*.
//! Booleans become the integers 0 and 1, as PVE writes them.

use serde_json::Value;

pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(b'u'),
        Value::Bool(b) => {
            out.push(b'i');
            out.extend_from_slice(&i64::from(*b).to_le_bytes());
        }
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(b'i');
                out.extend_from_slice(&i.to_le_bytes());
            } else if let Some(u) = n.as_u64() {
                out.push(b'U');
                out.extend_from_slice(&u.to_le_bytes());
            } else {
                out.push(b'n');
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(b's');
            bytes(s.as_bytes(), out);
        }
        Value::Array(items) => {
            out.push(b'a');
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Value::Object(map) => {
            out.push(b'h');
            out.extend_from_slice(&(map.len() as u64).to_le_bytes());
            for (k, item) in map {
                bytes(k.as_bytes(), out);
                encode(item, out);
            }
        }
    }
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}
