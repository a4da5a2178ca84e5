// SPDX-License-Identifier: GPL-2.0-only
/*
 * Group-based microsegmentation data plane (SPEC sections 3-5).
 *
 * Two tc programs on every guest NIC, attached as TCX links:
 *   microseg_stamp   on the NIC's ingress (what the guest sends): the NIC's
 *                    group into the low 16 bits of skb->mark, and the flows
 *                    the guest opens into the flow table;
 *   microseg_enforce on the NIC's egress (what reaches the guest): delivered
 *                    when the policy lets the source group open this
 *                    packet's flow (every packet, so a revoked rule stops
 *                    established flows at once), or when it answers a flow
 *                    this NIC's guest opened, or is an ICMP error quoting
 *                    one; ARP and neighbour discovery follow the policy.
 *
 * The policy is flattened by user space into an LPM trie: one lookup finds
 * the most specific decision for (src, dst, proto, dport). An unassigned
 * NIC carries the programs as pass-through; on every guest NIC the stamp
 * also refuses tunnel packets aimed at the node (guest_tunnel_forbidden).
 *
 * Built without vmlinux.h: only UAPI headers and bpf/include/.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "include/events.h"
#include "include/fib.h"
#include "include/mark.h"
#include "include/parse.h"
#include "include/policy.h"
#include "include/tcx.h"

/* Capacities; build-time parameters so that test objects can change the layout. */
#ifndef MICROSEG_TAP_MAX
#define MICROSEG_TAP_MAX 65536
#endif
#ifndef MICROSEG_RULES_MAX
#define MICROSEG_RULES_MAX (1 << 20)
#endif
/*
 * Assignments of the whole cluster (not only this node's NICs), and rule
 * slots (rules that decide some policy entry). Not preallocated, but a hash
 * map's bucket array is (16 bytes per max entry): 2^17 each keeps them at
 * about 2 MiB while holding 131,072 assignments and rules.
 */
#ifndef MICROSEG_ASSIGN_MAX
#define MICROSEG_ASSIGN_MAX (1 << 17)
#endif
#ifndef MICROSEG_RULE_SLOTS
#define MICROSEG_RULE_SLOTS (1 << 17)
#endif
/* The events ring buffer, in bytes (a power of two of pages). */
#ifndef MICROSEG_EVENTS_BYTES
#define MICROSEG_EVENTS_BYTES (256 * 1024)
#endif
/* The flow table's capacity; user space sets it from `ct-max` at load. */
#ifndef MICROSEG_FLOWS_MAX
#define MICROSEG_FLOWS_MAX 65536
#endif

#define NSEC 1000000000ULL
/* Idle timeouts (SPEC section 4): TCP long after establishment and short
 * after FIN/RST, UDP and ICMP tens of seconds. */
#define TIMEOUT_TCP (86400 * NSEC)
#define TIMEOUT_CLOSING (10 * NSEC)
#define TIMEOUT_SHORT (30 * NSEC)
#define TIMEOUT_OTHER (60 * NSEC)
/* How long an address the guest talks to or asked for may resolve it: past
 * the kernel's neighbour re-probes on both sides of a long-lived flow. */
#define TIMEOUT_PEER (300 * NSEC)
/* An entry seen within this is not rewritten: the established path is a lookup. */
#define REFRESH_AFTER NSEC

/* ifindex of an assigned local guest NIC -> its group mark. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MICROSEG_TAP_MAX);
	__type(key, struct nic_key);
	__type(value, struct nic_value);
} tap_to_group SEC(".maps");

/* Every assignment of the running config, recorded by the full pass for apply_iface. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MICROSEG_ASSIGN_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct assignment_key);
	__type(value, struct nic_value);
} assignments SEC(".maps");

/*
 * Counters per assigned NIC, per CPU so that no packet waits for another
 * CPU. User space creates an entry (zeroed) with the NIC's group entry and
 * deletes it with it; not preallocated, as a node has far fewer NICs than
 * the group map could hold.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MICROSEG_TAP_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct nic_key);
	__type(value, struct nic_counters);
} nic_stats SEC(".maps");

/* Rule slot -> rule id, written by user space (the data plane only counts). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MICROSEG_RULE_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct rule_name);
} rule_names SEC(".maps");

/* Rule slot -> packets the rule decided, per CPU; created by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MICROSEG_RULE_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u64);
} rule_hits SEC(".maps");

/* Drop and audit events, read by `pve-microseg monitor`. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MICROSEG_EVENTS_BYTES);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_settings);
} event_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_state);
} event_state SEC(".maps");

/* The flattened policy; an LPM trie is never preallocated. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MICROSEG_RULES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
} policy SEC(".maps");

/*
 * Pairs decided without L4, copied from the trie by user space (see
 * pair_key). Not preallocated; pairs beyond its capacity are decided by
 * the trie alone, with the same result.
 */
#ifndef MICROSEG_PAIRS_MAX
#define MICROSEG_PAIRS_MAX (1 << 18)
#endif
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MICROSEG_PAIRS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pair_key);
	__type(value, struct policy_value);
} pair_verdicts SEC(".maps");

/* The flows guests opened: bounded, least recently used evicted first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MICROSEG_FLOWS_MAX);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
} flows SEC(".maps");

/*
 * The flow cache: per CPU, an exact-match cache in front of the flow table
 * and the policy, as Open vSwitch's EMC sits in front of its classifier. A
 * packet of a flow seen on this CPU within REFRESH_AFTER finds its flow state
 * and, while the policy generation is unchanged, its verdict here: an array
 * slot (inlined by the verifier) and a key compare instead of a flow table
 * lookup (its 44-byte key hashed and compared) and the policy's hash or trie.
 * Direct-mapped: a flow displaces another with the same slot, which then
 * takes the slow path once. Entries are only trusted after a full key
 * compare, so a collision never answers for another flow.
 */
#ifndef MICROSEG_FLOW_CACHE
#define MICROSEG_FLOW_CACHE 512 /* a power of two */
#endif
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MICROSEG_FLOW_CACHE);
	__type(key, __u32);
	__type(value, struct flow_cache_entry);
} flow_cache SEC(".maps");

/*
 * The policy generation: user space adds one after every change of policy
 * and pair_verdicts is complete. A verdict cached under another generation
 * is not used, so a revoked rule stops established flows at once.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} policy_gen SEC(".maps");

/* The admission rate of new flows per NIC (struct flow_admission). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flow_admission);
} flow_admission SEC(".maps");

/*
 * Per NIC that adds flows: the theoretical arrival time of its next new
 * flow (GCRA, as emit's limiter). Shared by the CPUs and updated without a
 * lock: a race lets a flow more through, never one fewer. An LRU, so that
 * no one has to remove the entries of NICs that are gone; a NIC whose entry
 * was evicted starts with a full burst.
 */
#ifndef MICROSEG_BUDGETS_MAX
#define MICROSEG_BUDGETS_MAX 4096
#endif
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MICROSEG_BUDGETS_MAX);
	__type(key, struct nic_key);
	__type(value, __u64);
} flow_budget SEC(".maps");

/* Addresses guests talk to or asked for: their ARP and ND answers may pass. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MICROSEG_FLOWS_MAX / 4);
	__type(key, struct peer_key);
	__type(value, struct peer_seen);
} peers SEC(".maps");

/* The node's addresses, its subnets' broadcasts and the VTEP peers, from user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct addr_key);
	__type(value, struct addr_value);
} underlay_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	/* The kernel wants an array's key to be a plain 32-bit integer in BTF. */
	__type(key, __u32);
	__type(value, struct tunnel_settings);
} tunnel_config SEC(".maps");

static __always_inline struct addr_value *underlay_addr(const struct addr_key *key)
{
	return bpf_map_lookup_elem(&underlay_addrs, key);
}

/* A destination a tunnel packet must not have: the node, a broadcast. */
static __always_inline int node_bound(const struct addr_key *dst)
{
	struct addr_value *v = underlay_addr(dst);

	return v && (v->kind == ADDR_LOCAL || v->kind == ADDR_BROADCAST);
}

/* A source a guest must not claim: the node itself, or a VTEP peer. */
static __always_inline int forged_source(const struct addr_key *src)
{
	struct addr_value *v = underlay_addr(src);

	return v && (v->kind == ADDR_LOCAL || v->kind == ADDR_PEER);
}

/* Whether UDP port `p` (host order) is one the node decapsulates. */
static __always_inline int tunnel_port(__u16 p)
{
	__u32 zero = 0;
	struct tunnel_settings *cfg = bpf_map_lookup_elem(&tunnel_config, &zero);
	int i;

	if (!cfg)
		return 0;
#pragma unroll
	for (i = 0; i < MAX_TUNNEL_PORTS; i++)
		if (cfg->ports[i] && cfg->ports[i] == p)
			return 1;
	return 0;
}

/* The group entry of the NIC the skb is on; NULL when the NIC is not assigned. */
static __always_inline struct nic_value *nic_of(const struct __sk_buff *skb)
{
	struct nic_key key = { .ifindex = skb->ifindex };

	return bpf_map_lookup_elem(&tap_to_group, &key);
}

static __always_inline struct nic_counters *nic_counters_of(const struct __sk_buff *skb)
{
	struct nic_key key = { .ifindex = skb->ifindex };

	return bpf_map_lookup_elem(&nic_stats, &key);
}

/* Counts a packet the rule in `slot1` (slot + 1; 0: none) decided. */
static __always_inline void rule_hit(__u32 slot1)
{
	__u32 slot = slot1 - 1;
	__u64 *hits;

	if (!slot1)
		return;
	hits = bpf_map_lookup_elem(&rule_hits, &slot);
	if (hits)
		*hits += 1;
}

/* ICMP and ICMPv6 types (<linux/icmp.h> pulls in libc headers). */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

#define L3_OTHER 0
#define L3_IPV4 1
#define L3_IPV6 2
#define L3_ARP 3

#define ARPOP_REQUEST_ 1
#define ARPOP_REPLY_ 2

#define ND_ROUTER_SOLICIT 133
#define ND_ROUTER_ADVERT 134
#define ND_NEIGHBOR_SOLICIT 135
#define ND_NEIGHBOR_ADVERT 136

#define DHCP4_SERVER 67
#define DHCP4_CLIENT 68
#define DHCP6_CLIENT 546
#define DHCP6_SERVER 547

/*
 * Keys of the peers table for the host services a guest asked for: the
 * addresses its requests go to (the limited broadcast, All DHCP Relay Agents
 * and Servers, all routers).
 */
#define SERVICE_DHCP4 1   /* ::ffff:255.255.255.255 */
#define SERVICE_DHCP6 2   /* ff02::1:2 */
#define SERVICE_ROUTERS 3 /* ff02::2 */

/* Built on the stack: constant arrays would need a .rodata map. */
static __always_inline void service_addr(__u8 *a, int which)
{
	__builtin_memset(a, 0, 16);
	if (which == SERVICE_DHCP4) {
		__builtin_memset(a + 10, 0xff, 6);
		return;
	}
	a[0] = 0xff;
	a[1] = 0x02;
	a[13] = which == SERVICE_DHCP6 ? 1 : 0;
	a[15] = 2;
}

/* What the programs need of a packet. */
struct pkt {
	__u8 l3;
	__u8 proto;
	__u8 ports;	     /* sport and dport were read (first fragment of a port protocol, or ICMP echo) */
	__u8 later_fragment;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 srh;	     /* IPv6: a segment routing header was seen */
	__u8 mapped;	     /* IPv6 with an IPv4-mapped address (see v4_mapped) */
	__u16 arp_op;
	__u16 sport;	     /* host order; ICMP echo: the identifier */
	__u16 dport;	     /* host order; ICMP echo: 0 */
	__u32 l4_off;
	__u8 saddr[16];	     /* ARP: sender protocol address; IPv4 mapped */
	__u8 daddr[16];	     /* ARP: target protocol address */
	__u8 nd_target[16];  /* ND: the target address */
};

static __always_inline void map4(__u8 *dst, const void *v4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, v4, 4);
}

/*
 * Whether an IPv6 address is IPv4-mapped (::ffff:a.b.c.d). IPv4 flows are
 * keyed by such addresses (map4), so an IPv6 packet that carries one (never
 * valid on the wire, RFC 4291 2.5.5.2) would alias an IPv4 flow: it is
 * judged by the policy alone, never tracked, never a reply.
 */
static __always_inline int v4_mapped(const __u8 *a)
{
	__u8 any = 0;
	int i;

#pragma unroll
	for (i = 0; i < 10; i++)
		any |= a[i];
	return !any && a[10] == 0xff && a[11] == 0xff;
}

static __always_inline int is_echo(__u8 proto, __u8 type)
{
	return (proto == IPPROTO_ICMP && (type == ICMP_ECHO || type == ICMP_ECHOREPLY)) ||
	       (proto == IPPROTO_ICMPV6 && (type == ICMPV6_ECHO_REQUEST || type == ICMPV6_ECHO_REPLY));
}

/* Ports (or the echo identifier) of the L4 header at `off`. */
static __always_inline void read_l4(void *data, void *end, __u32 off, struct pkt *p)
{
	__u8 *l4 = data + off;

	/*
	 * Verifier trick: without this barrier clang may rebuild l4 from data +
	 * off after the bounds check below, and the rebuilt pointer carries no
	 * checked range. The barrier makes every use go through this value.
	 */
	asm volatile("" : "+r"(l4));
	p->l4_off = off;
	if ((void *)(l4 + 8) > end)
		return;
	if (p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP) {
		p->sport = ((__u16)l4[0] << 8) | l4[1];
		p->dport = ((__u16)l4[2] << 8) | l4[3];
		p->ports = 1;
		if (p->proto == IPPROTO_TCP && (void *)(l4 + 14) <= end)
			p->tcp_flags = l4[13];
	} else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		p->icmp_type = l4[0];
		if (is_echo(p->proto, p->icmp_type)) {
			p->sport = ((__u16)l4[4] << 8) | l4[5];
			p->dport = 0;
			p->ports = 1;
		}
	}
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 off = 0;
	__be16 proto = skip_vlans(data, end, &off);

	__builtin_memset(p, 0, sizeof(*p));
	if (proto == bpf_htons(ETH_P_ARP)) {
		/* Ethernet/IPv4 ARP: 8-byte header, then sha, spa, tha, tpa. */
		__u8 *arp = data + off;

		if ((void *)(arp + 28) > end)
			return 0;
		p->l3 = L3_ARP;
		p->arp_op = ((__u16)arp[6] << 8) | arp[7];
		map4(p->saddr, arp + 14);
		map4(p->daddr, arp + 24);
		return 0;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;
		__u32 ihl;

		if ((void *)(ip + 1) > end)
			return 0;
		p->l3 = L3_IPV4;
		p->proto = ip->protocol;
		map4(p->saddr, &ip->saddr);
		map4(p->daddr, &ip->daddr);
		if (ip->frag_off & bpf_htons(IP_OFFSET)) {
			p->later_fragment = 1;
			return 0;
		}
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return 0;
		read_l4(data, end, off + ihl, p);
		return 0;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		struct ipv6_chain chain;
		__u8 *body;

		if ((void *)(ip6 + 1) > end || ipv6_walk(data, end, off, &chain) < 0)
			return 0;
		p->l3 = L3_IPV6;
		p->proto = chain.proto;
		p->srh = chain.srh;
		__builtin_memcpy(p->saddr, &ip6->saddr, 16);
		__builtin_memcpy(p->daddr, &ip6->daddr, 16);
		p->mapped = v4_mapped(p->saddr) || v4_mapped(p->daddr);
		if (chain.later_fragment) {
			p->later_fragment = 1;
			return 0;
		}
		read_l4(data, end, chain.l4_off, p);
		if (p->proto == IPPROTO_ICMPV6 &&
		    (p->icmp_type == ND_NEIGHBOR_SOLICIT || p->icmp_type == ND_NEIGHBOR_ADVERT)) {
			body = data + chain.l4_off;
			if ((void *)(body + 24) <= end)
				__builtin_memcpy(p->nd_target, body + 8, 16);
		}
	}
	return 0;
}

/*
 * Whether a guest sends a tunnel packet the node could decapsulate, or that
 * claims the node's or a peer's address: UDP to a tunnel port, or SRv6 (a
 * segment routing header, or IP in IPv6 as the reduced encapsulation), to
 * the node, a broadcast or a multicast group, or from the node's or a
 * peer's address. Tunnels between guests (to a guest's unicast address,
 * from the guest's own) pass, through up to four VLAN tags as the bridge
 * may untag them. A later fragment carries no port and is never reassembled
 * without its first, which is judged. Reads the parsed packet: its
 * addresses are addr_keys already (IPv4 mapped).
 */
static __always_inline int guest_tunnel_forbidden(struct __sk_buff *skb, const struct pkt *p)
{
	const struct addr_key *src = (const void *)p->saddr, *dst = (const void *)p->daddr;
	int udp_tunnel = p->proto == IPPROTO_UDP && p->ports && tunnel_port(p->dport);

	if (p->l3 == L3_IPV4) {
		if (!udp_tunnel)
			return 0;
		/* Limited broadcast and multicast reach the node's sockets too. */
		if ((p->daddr[12] & p->daddr[13] & p->daddr[14] & p->daddr[15]) == 0xff || (p->daddr[12] >> 4) == 0xe)
			return 1;
		return node_bound(dst) || forged_source(src);
	}
	if (p->l3 != L3_IPV6)
		return 0;
	if (!(udp_tunnel || p->srh || p->proto == IPPROTO_IPIP || p->proto == IPPROTO_IPV6))
		return 0;
	if (p->daddr[0] == 0xff)
		return 1;
	if (node_bound(dst) || forged_source(src))
		return 1;
	/* A SID of this node (a seg6local route) decapsulates what it is
	 * sent without being a local address. Only that answer counts:
	 * without IPv6 forwarding the FIB cannot tell the node from a
	 * guest on the bridge (see the README). */
	return fib_lookup6(skb, skb->ifindex, (const struct in6_addr *)p->daddr) == BPF_FIB_LKUP_RET_UNSUPP_LWT;
}

static __always_inline __u64 timeout(const struct flow_key *k, const struct flow_value *v)
{
	if (v->flags & FLOW_F_CLOSING)
		return TIMEOUT_CLOSING;
	if (k->proto == IPPROTO_TCP)
		return TIMEOUT_TCP;
	if (k->proto == IPPROTO_UDP || k->proto == IPPROTO_ICMP || k->proto == IPPROTO_ICMPV6)
		return TIMEOUT_SHORT;
	return TIMEOUT_OTHER;
}

#define TCP_FIN 0x01
#define TCP_RST 0x04

static __always_inline void remember_peer(__u32 ifindex, const __u8 *addr, __u64 now)
{
	struct peer_key key = { .ifindex = ifindex };
	struct peer_seen *seen, fresh = { .last_seen = now };

	__builtin_memcpy(key.addr, addr, 16);
	seen = bpf_map_lookup_elem(&peers, &key);
	if (seen) {
		if (now - seen->last_seen > REFRESH_AFTER)
			seen->last_seen = now;
		return;
	}
	bpf_map_update_elem(&peers, &key, &fresh, BPF_ANY);
}

static __always_inline int peer_known(__u32 ifindex, const __u8 *addr, __u64 now)
{
	struct peer_key key = { .ifindex = ifindex };
	struct peer_seen *seen;

	__builtin_memcpy(key.addr, addr, 16);
	seen = bpf_map_lookup_elem(&peers, &key);
	return seen && now - seen->last_seen <= TIMEOUT_PEER;
}

/* The flow key of `p` seen from the guest behind `ifindex`; `toward` when
 * `p` travels toward the guest (its addresses and ports swapped). */
static __always_inline void flow_key_of(struct flow_key *key, __u32 ifindex, const struct pkt *p, int toward)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->ifindex = ifindex;
	key->proto = p->proto;
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		/* Echo: the identifier in both directions. */
		key->sport = p->sport;
	} else if (toward) {
		key->sport = p->dport;
		key->dport = p->sport;
	} else {
		key->sport = p->sport;
		key->dport = p->dport;
	}
	if (toward) {
		__builtin_memcpy(key->saddr, p->daddr, 16);
		__builtin_memcpy(key->daddr, p->saddr, 16);
	} else {
		__builtin_memcpy(key->saddr, p->saddr, 16);
		__builtin_memcpy(key->daddr, p->daddr, 16);
	}
}

/* Whether `p` carries the L4 identity a flow is keyed by. */
static __always_inline int keyable(const struct pkt *p)
{
	if (p->later_fragment || p->mapped)
		return 0;
	if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6)
		return p->ports; /* echo only */
	return 1;
}

/*
 * The flow cache (see flow_cache). The programs never interleave on one CPU
 * (both hooks run with bottom halves off), so an entry is read and written
 * whole without a lock. Flow keys are hashed and compared 8 bytes at a time
 * (five 64-bit words and a 32-bit tail): every key these functions see is
 * 8-byte aligned (the stack copies are declared so, the cache entry starts
 * with its key).
 */
_Static_assert(sizeof(struct flow_key) == 5 * 8 + 4, "flow key words");
#define FLOW_KEY_ALIGNED __attribute__((aligned(8)))

/*
 * The cache entry `k` may occupy: each word multiplied by its own odd
 * constant and summed (independent multiplies, not a dependent chain), the
 * slot taken from the high bits, which every key bit reaches.
 */
static __always_inline struct flow_cache_entry *cache_slot(const struct flow_key *k)
{
	const __u64 *w = (const void *)k;
	__u64 h = (__u64)((const __u32 *)k)[10] * 0x9e3779b97f4a7c15ULL;
	__u32 slot;
	int i;

#pragma unroll
	for (i = 0; i < 5; i++)
		h += w[i] * (0xc2b2ae3d27d4eb4fULL + 2 * i);
	slot = (h >> 40) & (MICROSEG_FLOW_CACHE - 1);
	return bpf_map_lookup_elem(&flow_cache, &slot);
}

static __always_inline int same_flow(const struct flow_key *a, const struct flow_key *b)
{
	const __u64 *x = (const void *)a, *y = (const void *)b;
	__u64 diff = ((const __u32 *)a)[10] ^ ((const __u32 *)b)[10];
	int i;

#pragma unroll
	for (i = 0; i < 5; i++)
		diff |= x[i] ^ y[i];
	return !diff;
}

/* Whether `e` holds the flow `k` as the flow table had it within REFRESH_AFTER. */
static __always_inline int cached_flow(const struct flow_cache_entry *e, const struct flow_key *k, __u64 now)
{
	return e && e->flow_seen && now - e->flow_seen <= REFRESH_AFTER && same_flow(&e->key, k);
}

/* Makes `e` the entry of `k`, forgetting what it held for another flow. */
static __always_inline void cache_claim(struct flow_cache_entry *e, const struct flow_key *k)
{
	if (same_flow(&e->key, k))
		return;
	__builtin_memcpy(&e->key, k, sizeof(*k));
	e->flow_seen = 0;
	e->gen = 0;
}

/*
 * Records that the flow table holds `k` with `flags`, fresh: called only
 * after the entry was found live (and refreshed) or written, so that a
 * cached flow is never older than its shortest timeout.
 */
static __always_inline void cache_flow(struct flow_cache_entry *e, const struct flow_key *k, __u32 flags, __u64 now)
{
	if (!e)
		return;
	cache_claim(e, k);
	e->flow_flags = flags;
	e->flow_seen = now;
}

/* A budget key's top bit: the NIC's inbound marks (ifindexes are below 2^31). */
#define BUDGET_INBOUND 0x80000000u

/*
 * Whether the NIC `ifindex` may add a flow to the table now (see
 * flow_admission): the flows its guest opens and the inbound marks of
 * flows toward it have a budget each, so that a flood toward a guest does
 * not keep the guest from opening flows. A refused one is counted in the
 * NIC's `unrecorded`.
 */
static __always_inline int flow_admitted(__u32 ifindex, int inbound, __u64 now)
{
	struct nic_key key = { .ifindex = ifindex | (inbound ? BUDGET_INBOUND : 0) };
	__u32 zero = 0;
	struct flow_admission *cfg = bpf_map_lookup_elem(&flow_admission, &zero);
	struct nic_counters *c;
	__u64 *tat, next;

	if (!cfg || !cfg->cost_ns)
		return 1;
	tat = bpf_map_lookup_elem(&flow_budget, &key);
	if (!tat) {
		next = now + cfg->cost_ns;
		bpf_map_update_elem(&flow_budget, &key, &next, BPF_ANY);
		return 1;
	}
	next = *tat > now ? *tat : now;
	if (next - now <= cfg->burst_ns) {
		*tat = next + cfg->cost_ns;
		return 1;
	}
	key.ifindex = ifindex; /* the NIC's counters (one key on the stack: enforce is near its limit) */
	c = bpf_map_lookup_elem(&nic_stats, &key);
	if (c)
		c->unrecorded += 1;
	return 0;
}

/*
 * Records what the guest behind `ifindex` opens or asks for: the target of
 * its ARP requests and neighbour solicitations, and a flow for each IP
 * packet that opens one. An echo request opens; an echo reply never does.
 * Anything else opens unless its flow is already known: as the guest's own
 * (refreshed), or as one the policy let in toward the guest (then the guest
 * is answering, and the flow stays inbound). An entry seen within
 * REFRESH_AFTER is only looked up.
 */
static __always_inline void track(__u32 ifindex, struct pkt *p)
{
	struct flow_cache_entry *e;
	struct flow_key key FLOW_KEY_ALIGNED;
	struct flow_value *v, fresh = {};
	__u64 now = bpf_ktime_get_coarse_ns();
	__u32 closing = (p->tcp_flags & (TCP_FIN | TCP_RST)) ? FLOW_F_CLOSING : 0;

	if (p->l3 == L3_ARP) {
		if (p->arp_op == ARPOP_REQUEST_)
			remember_peer(ifindex, p->daddr, now);
		return;
	}
	if (p->l3 != L3_IPV4 && p->l3 != L3_IPV6)
		return;
	if (p->proto == IPPROTO_ICMPV6 && p->icmp_type == ND_NEIGHBOR_SOLICIT) {
		remember_peer(ifindex, p->nd_target, now);
		return;
	}
	/* Host services the guest asks for: their answers may pass (see host_service). */
	if (p->proto == IPPROTO_ICMPV6 && p->icmp_type == ND_ROUTER_SOLICIT) {
		__u8 service[16];

		service_addr(service, SERVICE_ROUTERS);
		remember_peer(ifindex, service, now);
	}
	if (p->proto == IPPROTO_UDP && p->ports && (p->dport == DHCP4_SERVER || p->dport == DHCP6_SERVER)) {
		__u8 service[16];

		service_addr(service, p->dport == DHCP4_SERVER ? SERVICE_DHCP4 : SERVICE_DHCP6);
		remember_peer(ifindex, service, now);
	}
	if (!keyable(p))
		return;
	if ((p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) &&
	    p->icmp_type != ICMP_ECHO && p->icmp_type != ICMPV6_ECHO_REQUEST)
		return;
	flow_key_of(&key, ifindex, p, 0);
	e = cache_slot(&key);
	/* Known on this CPU within REFRESH_AFTER, and nothing to add. */
	if (cached_flow(e, &key, now) && !(closing & ~e->flow_flags))
		return;
	v = bpf_map_lookup_elem(&flows, &key);
	if (v) {
		if (now - v->last_seen > REFRESH_AFTER || (closing & ~v->flags))
			v->last_seen = now;
		v->flags |= closing;
		cache_flow(e, &key, v->flags, now);
		return;
	}
	if (!flow_admitted(ifindex, 0, now))
		return;
	fresh.last_seen = now;
	fresh.flags = closing;
	if (!bpf_map_update_elem(&flows, &key, &fresh, BPF_ANY))
		cache_flow(e, &key, closing, now);
	remember_peer(ifindex, p->daddr, now);
}

/* The flow of a packet toward the guest, with its cache entry. */
struct flow_ctx {
	struct flow_key key FLOW_KEY_ALIGNED; /* seen from the guest */
	struct flow_cache_entry *e;
	__u64 now;
	__u32 gen;   /* the policy generation, read before the policy is */
	__u8 keyed;  /* the packet has a flow key (IP, keyable) */
};

static __always_inline void flow_ctx_of(struct flow_ctx *f, __u32 ifindex, const struct pkt *p)
{
	__u32 zero = 0;
	__u32 *gen;

	f->keyed = (p->l3 == L3_IPV4 || p->l3 == L3_IPV6) && keyable(p);
	f->e = 0;
	f->gen = 0;
	if (!f->keyed)
		return;
	flow_key_of(&f->key, ifindex, p, 1);
	f->e = cache_slot(&f->key);
	f->now = bpf_ktime_get_coarse_ns();
	gen = bpf_map_lookup_elem(&policy_gen, &zero);
	if (gen)
		f->gen = *gen;
}

/* A flow the policy lets in toward the guest: known as inbound, so that the
 * guest's answers do not make it one the guest opened. */
static __always_inline void mark_inbound(struct flow_ctx *f, const struct pkt *p)
{
	struct flow_value *v, fresh = {};

	if (!f->keyed || p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6)
		return;
	/* In the table (inbound, or the guest's own) within REFRESH_AFTER. */
	if (cached_flow(f->e, &f->key, f->now))
		return;
	v = bpf_map_lookup_elem(&flows, &f->key);
	if (v) {
		if (f->now - v->last_seen > REFRESH_AFTER)
			v->last_seen = f->now;
		cache_flow(f->e, &f->key, v->flags, f->now);
		return;
	}
	/* Charged to this NIC's inbound budget: a flood toward it cannot cycle the table either. */
	if (!flow_admitted(f->key.ifindex, 1, f->now))
		return;
	fresh.last_seen = f->now;
	fresh.flags = FLOW_F_INBOUND;
	if (!bpf_map_update_elem(&flows, &f->key, &fresh, BPF_ANY))
		cache_flow(f->e, &f->key, FLOW_F_INBOUND, f->now);
}

/*
 * Emits a drop or audit event, rate limited per CPU by a GCRA: an event is
 * due one cost_ns after the previous one, and may come at most burst_ns
 * early. So a flood makes at most (burst_ns + t) / cost_ns + 1 events per
 * CPU in any t, the rest is counted as suppressed; counters stay exact.
 */
static __always_inline void emit(__u32 ifindex, __u8 kind, __u8 reason, __u32 rule, __u32 src, __u32 dst,
				 const struct pkt *p)
{
	__u32 zero = 0;
	struct event_settings *cfg = bpf_map_lookup_elem(&event_config, &zero);
	struct event_state *st = bpf_map_lookup_elem(&event_state, &zero);
	struct event ev;
	__u64 now;

	if (!cfg || !st || !cfg->cost_ns)
		return;
	now = bpf_ktime_get_ns();
	if (st->tat < now)
		st->tat = now;
	if (st->tat - now > cfg->burst_ns) {
		st->suppressed += 1;
		return;
	}
	st->tat += cfg->cost_ns;

	__builtin_memset(&ev, 0, sizeof(ev));
	ev.time_ns = now;
	ev.ifindex = ifindex;
	ev.rule = rule;
	ev.src = src;
	ev.dst = dst;
	ev.kind = kind;
	ev.reason = reason;
	ev.l3 = p->l3;
	ev.proto = p->proto;
	ev.sport = p->sport;
	ev.dport = p->dport;
	ev.icmp_type = p->l3 == L3_ARP ? p->arp_op : p->icmp_type;
	__builtin_memcpy(ev.saddr, p->saddr, 16);
	__builtin_memcpy(ev.daddr, p->daddr, 16);
	if (bpf_ringbuf_output(&events, &ev, sizeof(ev), 0))
		st->lost += 1;
	else
		st->emitted += 1;
}

SEC("classifier/microseg_stamp")
int microseg_stamp(struct __sk_buff *skb)
{
	struct nic_value *nic = nic_of(skb);
	struct pkt p;

	parse(skb, &p);
	if (guest_tunnel_forbidden(skb, &p)) {
		struct nic_counters *c = nic ? nic_counters_of(skb) : 0;

		if (c)
			c->blocked += 1;
		emit(skb->ifindex, EVENT_DROP, REASON_TUNNEL, 0, nic ? mark_group(nic->mark) : 0, 0, &p);
		return MS_TCX_DROP;
	}
	if (!nic)
		return MS_TCX_NEXT;
	skb_set_mark(skb, mark_with_group(skb_mark(skb), nic->mark));
	track(skb->ifindex, &p);
	return MS_TCX_NEXT;
}

/* The decision of a pair that does not depend on L4; NULL: ask the trie. */
static __always_inline struct policy_value *pair_verdict(__u32 src, __u32 dst)
{
	struct pair_key key = { .src = src, .dst = dst };

	return bpf_map_lookup_elem(&pair_verdicts, &key);
}

/* The policy's decision for `p` from group `src` to group `dst`. */
static __always_inline struct policy_value *decide(__u32 src, __u32 dst, const struct pkt *p)
{
	struct policy_key key = { .src = src, .dst = dst };
	struct policy_value *pair = pair_verdict(src, dst);

	if (pair)
		return pair;

	if (p->l3 == L3_IPV4 || p->l3 == L3_IPV6) {
		key.proto = p->proto;
		if (p->ports && p->proto != IPPROTO_ICMP && p->proto != IPPROTO_ICMPV6) {
			key.prefixlen = PREFIX_PORT_FULL;
			key.dport = bpf_htons(p->dport);
		} else {
			key.prefixlen = PREFIX_PROTO;
		}
	} else {
		/* Not IP: only rules without proto. */
		key.prefixlen = PREFIX_PAIR;
	}
	return bpf_map_lookup_elem(&policy, &key);
}

/*
 * The policy's decision for `p` into `out` (no entry: deny by no rule),
 * from the flow cache when it holds one made under the current policy
 * generation for the same groups. Only packets whose ports were read use
 * the cache: their flow key then holds everything decide() reads.
 */
static __always_inline void decide_cached(struct flow_ctx *f, __u32 src, __u32 dst, const struct pkt *p,
					  struct policy_value *out)
{
	struct flow_cache_entry *e = f->e;
	int cacheable = e && f->keyed && p->ports && f->gen;
	struct policy_value *v;

	if (cacheable && e->gen == f->gen && e->src == src && e->dst == dst && same_flow(&e->key, &f->key)) {
		*out = e->verdict;
		return;
	}
	v = decide(src, dst, p);
	if (v)
		*out = *v;
	else
		__builtin_memset(out, 0, sizeof(*out));
	if (cacheable) {
		cache_claim(e, &f->key);
		e->gen = f->gen;
		e->src = src;
		e->dst = dst;
		e->verdict = *out;
	}
}

/* The pair's entry: whether `src` may open anything at all toward `dst`. */
static __always_inline int pair_allows_any(__u32 src, __u32 dst)
{
	struct policy_key key = { .prefixlen = PREFIX_PAIR, .src = src, .dst = dst };
	struct policy_value *v = pair_verdict(src, dst);

	if (!v)
		v = bpf_map_lookup_elem(&policy, &key);

	return v && (v->flags & POLICY_FLAG_ANY_ALLOW);
}

/* A live flow the guest opened, for this key (cache entry `e`); refreshed when found. */
static __always_inline int flow_live(const struct flow_key *key, struct flow_cache_entry *e, __u32 closing, __u64 now)
{
	struct flow_value *v;

	if (cached_flow(e, key, now) && !(e->flow_flags & FLOW_F_INBOUND) && !(closing & ~e->flow_flags))
		return 1;
	v = bpf_map_lookup_elem(&flows, key);
	if (!v || (v->flags & FLOW_F_INBOUND) || now - v->last_seen > timeout(key, v))
		return 0;
	if (now - v->last_seen > REFRESH_AFTER)
		v->last_seen = now;
	v->flags |= closing;
	cache_flow(e, key, v->flags, now);
	return 1;
}

/* Whether `p` (toward the guest) answers a flow the guest opened. */
static __always_inline int is_reply(struct flow_ctx *f, const struct pkt *p)
{
	if (!f->keyed)
		return 0;
	/* Only an echo reply answers an echo request, with the same identifier. */
	if ((p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) &&
	    p->icmp_type != ICMP_ECHOREPLY && p->icmp_type != ICMPV6_ECHO_REPLY)
		return 0;
	return flow_live(&f->key, f->e, (p->tcp_flags & (TCP_FIN | TCP_RST)) ? FLOW_F_CLOSING : 0, f->now);
}

static __always_inline int is_icmp_error(const struct pkt *p)
{
	if (p->proto == IPPROTO_ICMP)
		return p->icmp_type == ICMP_DEST_UNREACH || p->icmp_type == ICMP_TIME_EXCEEDED ||
		       p->icmp_type == ICMP_PARAMETERPROB;
	if (p->proto == IPPROTO_ICMPV6)
		return p->icmp_type == ICMPV6_DEST_UNREACH || p->icmp_type == ICMPV6_PKT_TOOBIG ||
		       p->icmp_type == ICMPV6_TIME_EXCEED || p->icmp_type == ICMPV6_PARAMPROB;
	return 0;
}

/*
 * Whether `p` is an ICMP or ICMPv6 error quoting a packet of a flow the guest
 * opened (path MTU discovery): the quoted packet is the guest's own, so its
 * addresses and ports are the flow's as recorded.
 */
static __always_inline int quotes_a_flow(struct __sk_buff *skb, __u32 ifindex, const struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct flow_key key FLOW_KEY_ALIGNED = { .ifindex = ifindex };
	__u32 inner = p->l4_off + 8;
	__u8 *l4;

	if (!is_icmp_error(p) || p->mapped)
		return 0;
	if (p->l3 == L3_IPV4) {
		struct iphdr *ip = data + inner;

		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return 0;
		key.proto = ip->protocol;
		map4(key.saddr, &ip->saddr);
		map4(key.daddr, &ip->daddr);
		l4 = data + inner + ip->ihl * 4;
	} else {
		struct ipv6hdr *ip6 = data + inner;

		if ((void *)(ip6 + 1) > end)
			return 0;
		key.proto = ip6->nexthdr;
		__builtin_memcpy(key.saddr, &ip6->saddr, 16);
		__builtin_memcpy(key.daddr, &ip6->daddr, 16);
		if (v4_mapped(key.saddr) || v4_mapped(key.daddr))
			return 0;
		l4 = data + inner + sizeof(*ip6);
	}
	if ((void *)(l4 + 8) > end)
		return 0;
	if (key.proto == IPPROTO_ICMP || key.proto == IPPROTO_ICMPV6) {
		if (!is_echo(key.proto, l4[0]))
			return 0;
		key.sport = ((__u16)l4[4] << 8) | l4[5];
	} else {
		key.sport = ((__u16)l4[0] << 8) | l4[1];
		key.dport = ((__u16)l4[2] << 8) | l4[3];
	}
	return flow_live(&key, cache_slot(&key), 0, bpf_ktime_get_coarse_ns());
}

/*
 * Address resolution follows the policy (SPEC section 4): a request reaches
 * the guest when the requester's group may open something toward it or the
 * guest talks to the requester; an answer when the guest asked. Sets
 * `*handled` for ARP and ND, and `*asked` when what passes answers the guest.
 */
static __always_inline int resolution_verdict(__u32 ifindex, __u32 src, __u32 dst, const struct pkt *p, int *handled,
					      int *asked)
{
	__u64 now = bpf_ktime_get_coarse_ns();

	*handled = 1;
	*asked = 0;
	if (p->l3 == L3_ARP) {
		if (p->arp_op == ARPOP_REQUEST_) {
			if (pair_allows_any(src, dst))
				return 1;
			return *asked = peer_known(ifindex, p->saddr, now);
		}
		if (p->arp_op == ARPOP_REPLY_)
			return *asked = peer_known(ifindex, p->saddr, now);
	}
	if (p->l3 == L3_IPV6 && p->proto == IPPROTO_ICMPV6) {
		if (p->icmp_type == ND_NEIGHBOR_SOLICIT) {
			if (pair_allows_any(src, dst))
				return 1;
			return *asked = peer_known(ifindex, p->saddr, now);
		}
		if (p->icmp_type == ND_NEIGHBOR_ADVERT)
			return *asked = peer_known(ifindex, p->nd_target, now);
	}
	*handled = 0;
	return 0;
}

/*
 * Whether the node's own stack sent the packet: on a guest NIC's egress a
 * locally generated packet still carries its socket, one bridged from
 * another port or decapsulated from a tunnel does not. Only root binds the
 * DHCP ports or sends router advertisements.
 */
static __always_inline int from_node_stack(struct __sk_buff *skb)
{
	return skb->sk != 0;
}

/*
 * Host services a guest needs (SPEC section 4), without a rule: DHCPv4 and
 * DHCPv6 answers from the node's own stack to a guest that asked, and
 * router advertisements from the node's own stack (its router: sent
 * periodically as well as solicited). From anyone else they need a rule.
 */
static __always_inline int host_service(struct __sk_buff *skb, __u32 ifindex, const struct pkt *p)
{
	__u64 now;

	if (p->proto == IPPROTO_UDP && p->ports &&
	    ((p->sport == DHCP4_SERVER && p->dport == DHCP4_CLIENT) ||
	     (p->sport == DHCP6_SERVER && p->dport == DHCP6_CLIENT))) {
		__u8 service[16];

		if (!from_node_stack(skb))
			return 0;
		now = bpf_ktime_get_coarse_ns();
		service_addr(service, p->sport == DHCP4_SERVER ? SERVICE_DHCP4 : SERVICE_DHCP6);
		return peer_known(ifindex, service, now);
	}
	if (p->l3 == L3_IPV6 && p->proto == IPPROTO_ICMPV6 && p->icmp_type == ND_ROUTER_ADVERT)
		return from_node_stack(skb);
	return 0;
}

/* What enforcement decided for a packet toward the guest. */
struct judged {
	__u32 rule;   /* slot + 1 of the deciding rule, 0: none */
	__u8 reason;  /* why it would drop (REASON_*), 0: delivered */
	__u8 replied; /* delivered as an answer to the guest, not by a rule */
};

/* The verdict of SPEC section 4 for `p` from group `src` toward the guest behind the NIC of group `dst`. */
static __always_inline void judge(struct __sk_buff *skb, __u32 src, __u32 dst, struct pkt *p, struct flow_ctx *f,
				  struct judged *j)
{
	struct policy_value v;
	int handled, asked;

	if (resolution_verdict(skb->ifindex, src, dst, p, &handled, &asked)) {
		j->replied = asked;
		return;
	}
	if (handled) {
		j->reason = REASON_RESOLUTION;
		return;
	}
	/* Every packet is judged by the policy, established or not. */
	decide_cached(f, src, dst, p, &v);
	if (v.verdict == VERDICT_ALLOW) {
		j->rule = v.rule;
		return;
	}
	if ((p->l3 == L3_IPV4 || p->l3 == L3_IPV6) &&
	    (is_reply(f, p) || quotes_a_flow(skb, skb->ifindex, p) || host_service(skb, skb->ifindex, p))) {
		j->replied = 1;
		return;
	}
	/* Default deny: no entry drops just as an explicit deny does. */
	j->rule = v.rule;
	j->reason = j->rule ? REASON_RULE : REASON_NO_RULE;
}

SEC("classifier/microseg_enforce")
int microseg_enforce(struct __sk_buff *skb)
{
	struct nic_value *nic = nic_of(skb);
	struct nic_counters *c;
	struct judged j = {};
	struct flow_ctx f;
	struct pkt p;
	__u32 src, dst;
	int audit;

	/* Not (or no longer) assigned: not ours to enforce. */
	if (!nic)
		return MS_TCX_NEXT;
	dst = mark_group(nic->mark);
	audit = nic->flags & NIC_F_AUDIT;
	src = mark_group(skb->mark);
	parse(skb, &p);
	flow_ctx_of(&f, skb->ifindex, &p);
	judge(skb, src, dst, &p, &f, &j);

	c = nic_counters_of(skb);
	rule_hit(j.rule);
	if (!j.reason) {
		if (j.rule)
			mark_inbound(&f, &p);
		if (c) {
			if (j.replied)
				c->replied += 1;
			else
				c->allowed += 1;
		}
		return MS_TCX_NEXT;
	}
	if (audit) {
		/* Delivered as if allowed: the flow stays inbound, so that every
		 * packet of it is judged (and reported) again. */
		mark_inbound(&f, &p);
		if (c)
			c->audited += 1;
		emit(skb->ifindex, EVENT_AUDIT, j.reason, j.rule, src, dst, &p);
		return MS_TCX_NEXT;
	}
	if (c)
		c->dropped += 1;
	emit(skb->ifindex, EVENT_DROP, j.reason, j.rule, src, dst, &p);
	return MS_TCX_DROP;
}

char LICENSE[] SEC("license") = "GPL";
