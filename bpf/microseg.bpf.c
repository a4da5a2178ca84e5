// SPDX-License-Identifier: GPL-2.0-only
/*
 * Group-based microsegmentation data plane (SPEC section 4).
 *
 * Two tc programs per assigned guest NIC, attached as TCX links:
 *   microseg_stamp   on the NIC's ingress: traffic leaving the guest gets the
 *                    NIC's group in the low 16 bits of skb->mark;
 *   microseg_enforce on the NIC's egress: traffic toward the guest passes only
 *                    if rules[(mark & 0xffff, NIC's group)] says allow.
 *
 * All policy lives in user space; the data plane is two exact hash lookups.
 *
 * The programs sit on every guest NIC, assigned or not (an unassigned NIC
 * is passed through untouched by the policy). On every one of them the
 * stamp also refuses tunnel packets a guest aims at the node itself (see
 * guest_tunnel_forbidden): no guest can make the node decapsulate VXLAN or
 * SRv6 it built, and so choose a group.
 *
 * Built without vmlinux.h: only UAPI headers and bpf/include/.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include <linux/udp.h>

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

/* ifindex of an assigned local guest NIC -> its group mark. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MICROSEG_TAP_MAX);
	__type(key, struct nic_key);
	__type(value, struct nic_value);
} tap_to_group SEC(".maps");

/*
 * (source mark, destination mark) -> verdict, flattened by user space.
 * No preallocation: a million possible entries must not cost memory on a node
 * whose policy has a hundred.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MICROSEG_RULES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rule_key);
	__type(value, struct rule_value);
} rules SEC(".maps");

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

static __always_inline int tunnel_port(__be16 port)
{
	__u32 zero = 0;
	struct tunnel_settings *cfg = bpf_map_lookup_elem(&tunnel_config, &zero);
	__u16 p = bpf_ntohs(port);
	int i;

	if (!cfg)
		return 0;
#pragma unroll
	for (i = 0; i < MAX_TUNNEL_PORTS; i++)
		if (cfg->ports[i] && cfg->ports[i] == p)
			return 1;
	return 0;
}

static __always_inline void mapped_v4(struct addr_key *key, __be32 addr)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->addr[10] = 0xff;
	key->addr[11] = 0xff;
	__builtin_memcpy(&key->addr[12], &addr, 4);
}

/*
 * Whether a guest sends a tunnel packet the node could decapsulate, or that
 * claims the node's or a peer's address: UDP to a tunnel port, or SRv6 (a
 * segment routing header, or IP in IPv6 as the reduced encapsulation), to
 * the node, a broadcast or a multicast group, or from the node's or a
 * peer's address. Tunnels between guests (to a guest's unicast address,
 * from the guest's own) pass, through up to four VLAN tags as the bridge
 * may untag them. A later fragment carries no port and is never reassembled
 * without its first, which is judged.
 */
static __always_inline int guest_tunnel_forbidden(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct addr_key src, dst;
	struct udphdr *udp;
	__u32 off = 0, ihl;
	__be16 proto = skip_vlans(data, end, &off);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
			return 0;
		if (ip->frag_off & bpf_htons(IP_OFFSET))
			return 0;
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return 0;
		udp = data + off + ihl;
		if ((void *)(udp + 1) > end || !tunnel_port(udp->dest))
			return 0;
		/* Limited broadcast and multicast reach the node's sockets too. */
		if (ip->daddr == 0xffffffff || (bpf_ntohl(ip->daddr) >> 28) == 0xe)
			return 1;
		mapped_v4(&dst, ip->daddr);
		mapped_v4(&src, ip->saddr);
		return node_bound(&dst) || forged_source(&src);
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;
		struct ipv6_chain chain;
		int tunnel;

		if (ipv6_walk(data, end, off, &chain) < 0 || (void *)(ip6 + 1) > end)
			return 0;
		tunnel = chain.srh || chain.proto == IPPROTO_IPIP || chain.proto == IPPROTO_IPV6;
		if (!tunnel && chain.proto == IPPROTO_UDP && !chain.later_fragment) {
			udp = data + chain.l4_off;
			if ((void *)(udp + 1) > end)
				return 0;
			tunnel = tunnel_port(udp->dest);
		}
		if (!tunnel)
			return 0;
		if (ip6->daddr.s6_addr[0] == 0xff)
			return 1;
		__builtin_memcpy(dst.addr, &ip6->daddr, sizeof(dst.addr));
		__builtin_memcpy(src.addr, &ip6->saddr, sizeof(src.addr));
		return node_bound(&dst) || forged_source(&src);
	}
	return 0;
}

/* The group of the NIC the skb is on, or 0 when the NIC is not assigned. */
static __always_inline __u32 nic_group(const struct __sk_buff *skb)
{
	struct nic_key key = { .ifindex = skb->ifindex };
	struct nic_value *value = bpf_map_lookup_elem(&tap_to_group, &key);

	/* The verifier insists on the NULL check before the dereference. */
	return value ? mark_group(value->mark) : 0;
}

SEC("classifier/microseg_stamp")
int microseg_stamp(struct __sk_buff *skb)
{
	__u32 group, mark;

	if (guest_tunnel_forbidden(skb))
		return MS_TCX_DROP;
	group = nic_group(skb);
	if (!group)
		return MS_TCX_NEXT;
	mark = mark_with_group(skb->mark, group);
	/*
	 * Verifier trick: writes to skb->mark must be 32 bits wide, but clang
	 * sees that only the low half changes and emits a 16-bit store. Making
	 * the value opaque forces the full-width store.
	 */
	asm volatile("" : "+r"(mark));
	skb->mark = mark;
	return MS_TCX_NEXT;
}

SEC("classifier/microseg_enforce")
int microseg_enforce(struct __sk_buff *skb)
{
	struct rule_key key;
	struct rule_value *value;
	__u32 dst;

	dst = nic_group(skb);
	/* Not (or no longer) assigned: not ours to enforce. */
	if (!dst)
		return MS_TCX_NEXT;

	key.src = mark_group(skb->mark);
	key.dst = dst;
	value = bpf_map_lookup_elem(&rules, &key);
	/* Default deny: no entry drops just as an explicit deny does. */
	if (value && value->verdict == VERDICT_ALLOW)
		return MS_TCX_NEXT;
	return MS_TCX_DROP;
}

char LICENSE[] SEC("license") = "GPL";
