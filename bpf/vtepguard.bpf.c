// SPDX-License-Identifier: GPL-2.0-only
/*
 * VTEP guard (SPEC section 5, "No forged identity"). A VXLAN device with
 * `gbp` sets skb->mark from the Group Based Policy field of whatever VXLAN
 * packet reaches it, and the seg6 routes decapsulate SRv6 from anyone: so
 * on the TCX ingress of the node's underlay interfaces this program drops
 * VXLAN (UDP to the VXLAN port) and SRv6 (a segment routing header) unless
 * the outer source address is a configured peer, over IPv4 and IPv6 and
 * through up to four VLAN tags (802.1Q, 802.1ad, stacked; the kernel strips
 * one per receive round and this program runs on every round).
 *
 * From a non-peer, what could hide a port is dropped too: UDP fragments,
 * IPv6 extension chains longer than are looked through, and frames with
 * more VLAN tags than are looked through.
 */
#include <linux/bpf.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

#include "include/parse.h"
#include "include/tcx.h"
#include "include/underlay.h"

#define VXLAN_DEFAULT_PORT 4789

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct peer4_key);
	__type(value, struct peer_value);
} vtep_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct peer6_key);
	__type(value, struct peer_value);
} vtep_peers6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	/* The kernel wants an array's key to be a plain 32-bit integer in BTF. */
	__type(key, __u32);
	__type(value, struct guard_settings);
} guard_config SEC(".maps");

static __always_inline __be16 vxlan_port(void)
{
	__u32 zero = 0;
	struct guard_settings *cfg = bpf_map_lookup_elem(&guard_config, &zero);

	return bpf_htons(cfg && cfg->vxlan_port ? (__u16)cfg->vxlan_port : VXLAN_DEFAULT_PORT);
}

/* UDP at `off` to the VXLAN port; a truncated header counts as not. */
static __always_inline int to_vxlan_port(void *data, void *end, __u32 off)
{
	struct udphdr *udp = data + off;

	if ((void *)(udp + 1) > end)
		return 0;
	return udp->dest == vxlan_port();
}

static __always_inline int guard_ipv4(void *data, void *end, __u32 off)
{
	struct iphdr *ip = data + off;
	struct peer4_key key;
	__u32 ihl;

	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
		return MS_TCX_NEXT;
	key.addr = ip->saddr;
	if (bpf_map_lookup_elem(&vtep_peers, &key))
		return MS_TCX_NEXT;
	/* A fragment may hide the port: UDP fragments from non-peers are dropped. */
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return MS_TCX_DROP;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip) || ihl > 60)
		return MS_TCX_DROP;
	return to_vxlan_port(data, end, off + ihl) ? MS_TCX_DROP : MS_TCX_NEXT;
}

static __always_inline int guard_ipv6(void *data, void *end, __u32 off)
{
	struct ipv6hdr *ip6 = data + off;
	struct ipv6_chain chain;
	struct peer6_key key;

	if ((void *)(ip6 + 1) > end)
		return MS_TCX_NEXT;
	__builtin_memcpy(key.addr, &ip6->saddr, sizeof(key.addr));
	if (bpf_map_lookup_elem(&vtep_peers6, &key))
		return MS_TCX_NEXT;
	/* Cut short inside the headers: not a packet the stack decapsulates. */
	if (ipv6_walk(data, end, off, &chain) < 0)
		return MS_TCX_NEXT;
	if (chain.srh || !chain.complete)
		return MS_TCX_DROP;
	if (chain.proto != IPPROTO_UDP)
		return MS_TCX_NEXT;
	if (chain.later_fragment)
		return MS_TCX_DROP;
	return to_vxlan_port(data, end, chain.l4_off) ? MS_TCX_DROP : MS_TCX_NEXT;
}

SEC("classifier/vtep_guard")
int vtep_guard(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 off = 0;
	__be16 proto = skip_vlans(data, end, &off);

	if (proto == bpf_htons(ETH_P_IP))
		return guard_ipv4(data, end, off);
	if (proto == bpf_htons(ETH_P_IPV6))
		return guard_ipv6(data, end, off);
	/* More tags than are looked through: never passed on unseen. */
	if (is_vlan_proto(proto))
		return MS_TCX_DROP;
	return MS_TCX_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
