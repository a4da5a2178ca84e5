// SPDX-License-Identifier: GPL-2.0-only
/*
 * VTEP guard: the mitigation for the VXLAN trust problem (README, "Across
 * nodes"). A VXLAN device with `gbp` sets skb->mark from the Group Based
 * Policy field of whatever VXLAN packet reaches it, so anyone who can send
 * VXLAN to a node's VTEP can claim any group. This program sits on the TCX
 * ingress of the node's underlay interfaces and drops IPv4 UDP to the VXLAN
 * port unless the outer source address is a configured peer.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "include/tcx.h"
#include "include/underlay.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define VXLAN_DEFAULT_PORT 4789

/* Outer IPv4 source addresses allowed to send VXLAN. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct peer4_key);
	__type(value, struct peer_value);
} vtep_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	/* The kernel wants an array's key to be a plain 32-bit integer in BTF. */
	__type(key, __u32);
	__type(value, struct guard_settings);
} guard_config SEC(".maps");

static __always_inline int is_peer(__u32 saddr)
{
	struct peer4_key key = { .addr = saddr };

	return bpf_map_lookup_elem(&vtep_peers, &key) != NULL;
}

static __always_inline __u16 vxlan_port(void)
{
	__u32 zero = 0;
	struct guard_settings *cfg = bpf_map_lookup_elem(&guard_config, &zero);

	return cfg && cfg->vxlan_port ? (__u16)cfg->vxlan_port : VXLAN_DEFAULT_PORT;
}

SEC("classifier/vtep_guard")
int vtep_guard(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 ihl;

	/* Every access is bounds-checked against data_end for the verifier. */
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return MS_TCX_NEXT;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
		return MS_TCX_NEXT;
	if (is_peer(ip->saddr))
		return MS_TCX_NEXT;
	/* A fragment may hide the port: UDP fragments from non-peers are dropped. */
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return MS_TCX_DROP;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip) || ihl > 60)
		return MS_TCX_NEXT;
	udp = (void *)ip + ihl;
	if ((void *)(udp + 1) > end)
		return MS_TCX_NEXT;
	if (udp->dest == bpf_htons(vxlan_port()))
		return MS_TCX_DROP;
	return MS_TCX_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
