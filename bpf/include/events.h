/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Observability records shared with user space (SPEC section 7): rule names
 * by slot, the drop and audit events of the ring buffer, and the per-CPU
 * state of their rate limit. Mirrored by #[repr(C)] Rust types in
 * src/subsystems/microseg/maps.rs; no padding.
 */
#ifndef PVE_EBPF_EVENTS_H
#define PVE_EBPF_EVENTS_H

#include <linux/types.h>

#define RULE_NAME_LEN 64

/* Value of rule_names (keyed by slot): the rule's id, NUL padded. */
struct rule_name {
	__u8 name[RULE_NAME_LEN];
};

#define EVENT_DROP 1
#define EVENT_AUDIT 2

#define REASON_NO_RULE 1    /* no rule matched: default deny */
#define REASON_RULE 2	    /* a rule denies (event.rule names it) */
#define REASON_RESOLUTION 3 /* ARP/ND the policy does not let through */
#define REASON_TUNNEL 4	    /* from the guest: a tunnel packet aimed at the node */

#define EVENT_L3_OTHER 0
#define EVENT_L3_IPV4 1
#define EVENT_L3_IPV6 2
#define EVENT_L3_ARP 3

/* One record of the events ring buffer. */
struct event {
	__u64 time_ns;	/* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 ifindex;
	__u32 rule;	/* slot + 1 of the deciding rule, 0: none */
	__u16 src;	/* source group mark (0: unstamped) */
	__u16 dst;	/* destination group mark */
	__u8 kind;	/* EVENT_DROP, EVENT_AUDIT */
	__u8 reason;	/* REASON_* */
	__u8 l3;	/* EVENT_L3_* */
	__u8 proto;
	__u16 sport;	/* host order; ICMP echo: the identifier */
	__u16 dport;
	__u8 icmp_type; /* ICMP/ICMPv6 type; ARP: the operation */
	__u8 pad[3];
	__u8 saddr[16]; /* IPv6, IPv4 mapped; ARP: sender and target protocol addresses */
	__u8 daddr[16];
};

/*
 * Value of the one-entry event_config array, from user space: each CPU may
 * emit one event per `cost_ns` with at most `burst_ns` of credit ahead
 * (a GCRA); cost_ns 0 turns events off.
 */
struct event_settings {
	__u64 cost_ns;
	__u64 burst_ns;
};

/* Value of the per-CPU event_state array: the limiter and what it did. */
struct event_state {
	__u64 tat;	  /* theoretical arrival time of the next event */
	__u64 emitted;
	__u64 suppressed; /* over the rate limit */
	__u64 lost;	  /* the ring buffer was full (no reader keeping up) */
};

#endif
