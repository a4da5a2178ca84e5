/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Map keys and values of the microseg object. Every struct here is mirrored
 * by a #[repr(C)] Rust type in src/subsystems/microseg/maps.rs, and a test
 * compares both layouts against this object's BTF: change them together.
 * No struct may have padding (user space writes every byte).
 */
#ifndef PVE_EBPF_POLICY_H
#define PVE_EBPF_POLICY_H

#include <linux/types.h>

/* Key of tap_to_group: an assigned local guest NIC. */
struct nic_key {
	__u32 ifindex;
};

/* Value of tap_to_group: the NIC's group mark (1..=65535). */
struct nic_value {
	__u32 mark;
};

/* Key of rules: (source mark, destination mark), flattened by user space. */
struct rule_key {
	__u16 src;
	__u16 dst;
};

#define VERDICT_DENY 0
#define VERDICT_ALLOW 1

/* Value of rules. */
struct rule_value {
	__u8 verdict;
};

/* Key of underlay_addrs: an IPv6 address, or an IPv4 one mapped (::ffff:a.b.c.d). */
struct addr_key {
	__u8 addr[16];
};

#define ADDR_LOCAL 1	 /* an address of this node */
#define ADDR_BROADCAST 2 /* a broadcast address of one of its subnets */
#define ADDR_PEER 3	 /* a VTEP peer */

/* Value of underlay_addrs. */
struct addr_value {
	__u8 kind;
};

#define MAX_TUNNEL_PORTS 4

/* Value of the one-entry tunnel_config array: UDP ports the node decapsulates (0: unused). */
struct tunnel_settings {
	__u16 ports[MAX_TUNNEL_PORTS];
};

#endif
