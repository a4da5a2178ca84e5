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

/* Value of tap_to_group: the NIC's group mark (1..=65535) and flags. */
struct nic_value {
	__u16 mark;
	__u16 flags;
};

/*
 * Key of assignments: a guest NIC of the cluster by (vmid, n of net<n>).
 * The data plane never reads it: the full pass records every assignment
 * there (value: the nic_value the NIC gets), so that apply_iface answers
 * from one lookup while the running config is the one that pass applied.
 */
struct assignment_key {
	__u32 vmid;
	__u32 iface;
};

/* The NIC's group is in audit mode: deliver, count and report what would drop. */
#define NIC_F_AUDIT 1

/*
 * Value of the per-CPU nic_stats (keyed by nic_key), in packets toward the
 * guest: delivered by a rule, delivered as an answer to the guest's own
 * flows, dropped, and passed in audit mode although the policy drops them;
 * `blocked` counts packets from the guest refused (tunnels aimed at the node).
 */
struct nic_counters {
	__u64 allowed;
	__u64 replied;
	__u64 dropped;
	__u64 audited;
	__u64 blocked;
	__u64 unrecorded; /* new flows past the NIC's admission rate (flow_admission) */
};

/*
 * Key of the LPM trie policy, flattened by user space: the prefix length,
 * then source mark, destination mark, protocol, a zero byte and the
 * destination port in network order (so that port blocks are prefixes).
 * Prefix 32 is the pair, 40 the protocol, 48 + n a block of ports.
 */
struct policy_key {
	__u32 prefixlen;
	__u16 src;
	__u16 dst;
	__u8 proto;
	__u8 pad;
	__be16 dport;
};

/*
 * Key of pair_verdicts: a (src, dst) pair whose decision does not depend on
 * L4 (the trie holds only its /32 entry). Its value is that entry's: one
 * hash probe instead of the trie walk, with the same answer.
 */
struct pair_key {
	__u16 src;
	__u16 dst;
};

#define PREFIX_PAIR 32
#define PREFIX_PROTO 40
#define PREFIX_PORT_FULL 64

#define VERDICT_DENY 0
#define VERDICT_ALLOW 1

/* The pair allows something at some L4: address resolution may pass. */
#define POLICY_FLAG_ANY_ALLOW 1

/*
 * Value of policy: the verdict and the deciding rule's slot + 1 (0: none).
 * A rule keeps its slot while it exists (its id is in rule_names), so that
 * its hits survive changes of other rules.
 */
struct policy_value {
	__u8 verdict;
	__u8 flags;
	__u16 pad;
	__u32 rule;
};

/*
 * Key of the LRU flows: a flow a guest opened, seen from the guest (its
 * address and port first). Addresses are IPv6, IPv4 mapped. ICMP echo
 * carries its identifier as sport and 0 as dport.
 */
struct flow_key {
	__u32 ifindex;
	__u8 proto;
	__u8 pad[3];
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

#define FLOW_F_CLOSING 1 /* a FIN or RST was seen */
/*
 * The flow was let in toward the guest by the policy, not opened by it: its
 * packets toward the guest are judged by the policy alone (a revoked rule
 * stops them), and the guest's answers do not turn it into a flow of its own.
 */
#define FLOW_F_INBOUND 2

struct flow_value {
	__u64 last_seen;
	__u32 flags;
	__u32 pad;
};

/*
 * Value of the per-CPU array flow_cache: one flow as the flow table and the
 * policy last answered for it on this CPU (see the cache in microseg.bpf.c).
 * The flow part is valid for REFRESH_AFTER from flow_seen (0: none); the
 * verdict part while gen equals the policy generation (0: none) and the
 * packet's source and destination groups are src and dst. User space only
 * clears it.
 */
struct flow_cache_entry {
	struct flow_key key;
	__u32 flow_flags;
	__u64 flow_seen;
	__u32 gen;
	__u16 src;
	__u16 dst;
	struct policy_value verdict;
};

/* Key of the LRU peers: an address a guest talks to or asked for. */
struct peer_key {
	__u32 ifindex;
	__u8 addr[16];
};

struct peer_seen {
	__u64 last_seen;
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

/*
 * Value of the one-entry flow_admission array, from user space: each NIC
 * may add a flow to the flow table once per cost_ns, up to burst_ns early
 * (cost 0: no limit). So one guest's flood of new flows cannot cycle the
 * table faster than the flows in use refresh their place in it.
 */
struct flow_admission {
	__u64 cost_ns;
	__u64 burst_ns;
};

#endif
