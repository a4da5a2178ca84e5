/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Map keys and values of the VTEP guard, mirrored by #[repr(C)] Rust types in
 * src/subsystems/vtepguard/maps.rs (layouts checked against BTF by a test).
 */
#ifndef PVE_EBPF_UNDERLAY_H
#define PVE_EBPF_UNDERLAY_H

#include <linux/types.h>

/* Key of vtep_peers: an outer IPv4 source address, network order. */
struct peer4_key {
	__u32 addr;
};

/* Value of vtep_peers. */
struct peer_value {
	__u8 allowed;
};

/* Value of the one-entry guard_config array (its key is a __u32 index): the VXLAN UDP port, host order (0: 4789). */
struct guard_settings {
	__u32 vxlan_port;
};

#endif
