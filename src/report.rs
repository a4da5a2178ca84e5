//! What a call returns: one definition, from which the binding builds the
//! Perl hash (by serialising it) and the CLI its output.

use serde::Serialize;

/// What a pass changed in the kernel; counted where the change is made.
/// Every field becomes a key of the hash `apply_full()` returns to Perl.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// A BPF object was loaded (the verifier ran).
    pub loaded: bool,
    pub map_writes: usize,
    pub map_deletes: usize,
    pub links_created: usize,
    pub links_updated: usize,
    pub links_detached: usize,
    /// Local assigned guest NICs enforced after the pass.
    pub nics: usize,
    /// Underlay interfaces with the VTEP guard after the pass.
    pub guarded: usize,
}

impl Report {
    /// The field names, in order, as Perl sees them: derived from the
    /// serialised struct, so there is no second list to keep in step.
    pub fn fields() -> Vec<String> {
        match serde_json::to_value(Report::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => unreachable!("Report serialises to an object"),
        }
    }
}

impl std::fmt::Display for Report {
    /// One line for logs and the CLI: `loaded=no map_writes=3 ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) else { return Err(std::fmt::Error) };
        let parts: Vec<String> = map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::Bool(b) => format!("{k}={}", if *b { "yes" } else { "no" }),
                other => format!("{k}={other}"),
            })
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// What `simulate()` returns: which rule decides a flow and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Simulation {
    /// `allow` or `deny`.
    pub verdict: &'static str,
    /// The deciding rule's id; `None` when no rule matches (default deny)
    /// or the destination is not enforced.
    pub rule: Option<String>,
    /// How the rule was chosen (or that none matched).
    pub reason: String,
    /// Whether the destination's group is in audit mode (audit mode is not
    /// implemented yet: always 0).
    pub audit: u8,
}
