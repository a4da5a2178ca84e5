//! What the underlay subsystems (the VTEP guard, the SRv6 carrier) share:
//! their targets are the configured interfaces that exist on the node, a
//! full pass records those names, and `status` warns about each one that is
//! missing or does not carry the programs.

use crate::kernel::links::Target;
use crate::kernel::netdev;
use crate::kernel::reconcile::Plan;

/// The interfaces of `ifaces` that exist on this node; a missing one is a
/// warning (`what` names the subsystem).
pub(crate) fn targets(ifaces: &[String], what: &str) -> Vec<Target> {
    let mut targets = Vec::new();
    for iface in ifaces {
        match netdev::ifindex(iface) {
            Some(ifindex) => targets.push(Target { name: iface.clone(), ifindex }),
            None => log::warn!("microseg: {what}: underlay interface {iface} does not exist on this node"),
        }
    }
    targets
}

/// What a full pass records: the configured interfaces (the rest of the
/// section is in the subsystem's maps).
pub(crate) fn record(ifaces: Option<&Vec<String>>) -> serde_json::Value {
    ifaces.map_or(serde_json::Value::Null, |ifaces| serde_json::json!({ "ifaces": ifaces }))
}

/// The plan of a full pass over the applied config: the recorded
/// interfaces that exist now, the maps left as they are; `None` if the
/// record has no interfaces.
pub(crate) fn plan_recorded(record: &serde_json::Value, what: &str) -> Option<Plan> {
    let ifaces: Vec<String> =
        record.get("ifaces")?.as_array()?.iter().map(|i| i.as_str().map(str::to_owned)).collect::<Option<_>>()?;
    let targets = targets(&ifaces, what);
    Some(Plan { maps: Vec::new(), counted: targets.len(), capacities: Vec::new(), targets })
}

/// Warns about each configured interface that does not exist, or does not
/// carry the programs (is not in `attached`); `section` names the config
/// section, `not_attached` says what it lacks.
pub(crate) fn warnings(section: &str, ifaces: &[String], attached: &[String], not_attached: &str, out: &mut Vec<String>) {
    for iface in ifaces {
        if netdev::ifindex(iface).is_none() {
            out.push(format!("{section}: underlay interface {iface} does not exist on this node"));
        } else if !attached.contains(iface) {
            out.push(format!("{section}: underlay interface {iface} {not_attached} (apply_full)"));
        }
    }
}
