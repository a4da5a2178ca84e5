/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Bounded header walking shared by the programs. Every read is checked
 * against data_end for the verifier; every loop has a constant bound and is
 * unrolled, so a hostile frame costs at most a fixed number of steps.
 */
#ifndef PVE_EBPF_PARSE_H
#define PVE_EBPF_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>

/* VLAN tags looked through: the kernel strips one per receive round. */
#define MAX_VLAN_TAGS 4
/* IPv6 extension headers looked through. */
#define MAX_IPV6_EXT 4

#define ETH_P_8021AD_ 0x88A8
#define ETH_P_QINQ1_ 0x9100

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
/* Routing header type 4: the segment routing header (SRv6). */
#define IPV6_SRCRT_TYPE_4_ 4

struct vlan_hdr_ {
	__be16 tci;
	__be16 proto;
};

static __always_inline int is_vlan_proto(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD_) ||
	       proto == bpf_htons(ETH_P_QINQ1_);
}

/*
 * The ethertype after up to MAX_VLAN_TAGS tags, and in *off the offset of
 * the header it announces. Returns 0 when the frame ends early, and a VLAN
 * ethertype when there are more tags than are looked through.
 */
static __always_inline __be16 skip_vlans(void *data, void *end, __u32 *off)
{
	struct ethhdr *eth = data;
	struct vlan_hdr_ *vlan;
	__be16 proto;
	int i;

	if ((void *)(eth + 1) > end)
		return 0;
	proto = eth->h_proto;
	*off = sizeof(*eth);
#pragma unroll
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		if (!is_vlan_proto(proto))
			break;
		vlan = data + *off;
		if ((void *)(vlan + 1) > end)
			return 0;
		proto = vlan->proto;
		*off += sizeof(*vlan);
	}
	return proto;
}

/* Whether `next` names an IPv6 extension header that is looked through. */
static __always_inline int ipv6_is_ext(__u8 next)
{
	return next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_FRAGMENT ||
	       next == NEXTHDR_AUTH || next == NEXTHDR_DEST;
}

/*
 * The length of extension header `next` from its first bytes `ext`: a
 * fragment header is 8 bytes, AH counts 4-byte words minus 2, the others
 * 8-byte words minus 1.
 */
static __always_inline __u32 ipv6_ext_len(__u8 next, const __u8 *ext)
{
	if (next == NEXTHDR_FRAGMENT)
		return 8;
	return next == NEXTHDR_AUTH ? ((__u32)ext[1] + 2) * 4 : ((__u32)ext[1] + 1) * 8;
}

/* Whether fragment header `ext` has a non-zero offset (the upper 13 bits of
 * bytes 2-3): a later fragment, which carries no upper-layer header. */
static __always_inline int ipv6_later_fragment(const __u8 *ext)
{
	return ((((__u16)ext[2] << 8) | ext[3]) & 0xfff8) != 0;
}

/* What an IPv6 extension header chain ends in. */
struct ipv6_chain {
	__u8 proto;	/* the upper-layer protocol, or an extension header if the chain was too long */
	__u8 srh;	/* a segment routing header was seen */
	__u8 later_fragment; /* a fragment header with a non-zero offset: no upper header here */
	__u8 complete;	/* the chain ended within MAX_IPV6_EXT headers */
	__u32 l4_off;	/* offset of the upper-layer header */
};

/* Walks the extension headers after the IPv6 header at `off`. */
static __always_inline int ipv6_walk(void *data, void *end, __u32 off, struct ipv6_chain *c)
{
	struct ipv6hdr *ip6 = data + off;
	__u8 *ext;
	__u8 next;
	int i, later;

	if ((void *)(ip6 + 1) > end)
		return -1;
	next = ip6->nexthdr;
	off += sizeof(*ip6);
	c->srh = 0;
	c->later_fragment = 0;
	c->complete = 0;
#pragma unroll
	for (i = 0; i < MAX_IPV6_EXT; i++) {
		if (!ipv6_is_ext(next)) {
			c->complete = 1;
			break;
		}
		ext = data + off;
		if ((void *)(ext + 8) > end)
			return -1;
		if (next == NEXTHDR_ROUTING && ext[2] == IPV6_SRCRT_TYPE_4_)
			c->srh = 1;
		later = next == NEXTHDR_FRAGMENT && ipv6_later_fragment(ext);
		off += ipv6_ext_len(next, ext);
		next = ext[0];
		if (later) {
			c->later_fragment = 1;
			c->complete = 1;
			break;
		}
	}
	c->proto = next;
	c->l4_off = off;
	return 0;
}

#endif
