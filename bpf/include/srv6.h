/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The SRv6 carrier's shared types, mirrored by #[repr(C)] Rust types in
 * src/subsystems/srv6/maps.rs (layouts checked against BTF by a test). Its
 * peers use the underlay's peer6_key and peer_value.
 */
#ifndef PVE_EBPF_SRV6_H
#define PVE_EBPF_SRV6_H

#include <linux/types.h>

/* Packet counters of the carrier, one per CPU (slot 0 of srv6_stats). */
struct srv6_counters {
	__u64 tagged;	/* sent: the group written into the SRH tag */
	__u64 restored;	/* received from a peer: the mark's group set from the tag */
	__u64 transit;	/* received from a peer, not for this node: passed untouched */
	__u64 dropped;	/* received SRv6 from a non-peer */
	__u64 invalid;	/* received SRv6 with an inconsistent or unreadable header */
};

#endif
