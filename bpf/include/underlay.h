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

/* Key of vtep_peers6: an outer IPv6 source address. */
struct peer6_key {
	__u8 addr[16];
};

/* Value of vtep_peers and vtep_peers6. */
struct peer_value {
	__u8 allowed;
};

/* Value of the one-entry guard_config array (its key is a __u32 index). */
struct guard_settings {
	__u32 vxlan_port;
};

#endif
