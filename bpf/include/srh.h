/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Finding and checking an IPv6 segment routing header (RFC 8754) with
 * bpf_skb_load_bytes, so that headers outside the linear area are read too
 * and nothing is read past the packet. Every loop has a constant bound.
 */
#ifndef PVE_EBPF_SRH_H
#define PVE_EBPF_SRH_H

#include <linux/bpf.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>

#include "parse.h"

/* The fixed part of a segment routing header. */
struct srh_fixed {
	__u8 nexthdr;
	__u8 hdrlen;	/* in 8-byte units, not counting the first 8 bytes */
	__u8 type;	/* 4 */
	__u8 segments_left;
	__u8 last_entry; /* index of the last segment in the list */
	__u8 flags;
	__be16 tag;
};

/* What srh_find says about an IPv6 packet. */
enum srh_kind {
	SRH_NONE = 0,	/* no segment routing header in the chain */
	SRH_FOUND,	/* a consistent one at *srh_off */
	SRH_BAD,	/* one whose lengths or segments-left do not add up */
	SRH_UNREADABLE,	/* the chain is cut short or longer than is looked through */
};

/* Offset of the tag inside the segment routing header. */
#define SRH_TAG_OFF 6

/*
 * Whether the SRH's fields are consistent, as the kernel's seg6 code checks
 * them: the segment list fits the header, segments-left does not point past
 * it (one past the list is the reduced encapsulation), the whole header lies
 * inside the packet.
 */
static __always_inline int srh_consistent(const struct srh_fixed *h, __u32 off, __u32 pkt_len)
{
	__u32 len = ((__u32)h->hdrlen + 1) * 8;

	if (((__u32)h->last_entry + 1) * 16 + sizeof(*h) > len)
		return 0;
	if (h->segments_left > (__u32)h->last_entry + 1)
		return 0;
	return off + len <= pkt_len;
}

/*
 * Walks the IPv6 extension headers after the IPv6 header at `l3_off` and
 * looks for a segment routing header; on SRH_FOUND its fixed part is in *h
 * and its offset in *srh_off.
 */
static __always_inline enum srh_kind srh_find(struct __sk_buff *skb, __u32 l3_off, struct srh_fixed *h, __u32 *srh_off)
{
	__u8 ext[8];
	__u32 off = l3_off + sizeof(struct ipv6hdr);
	__u8 next;
	int i;

	if (bpf_skb_load_bytes(skb, l3_off + 6, &next, 1) < 0)
		return SRH_UNREADABLE;
#pragma unroll
	for (i = 0; i < MAX_IPV6_EXT; i++) {
		if (!ipv6_is_ext(next))
			return SRH_NONE;
		if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
			return SRH_UNREADABLE;
		if (next == NEXTHDR_ROUTING && ext[2] == IPV6_SRCRT_TYPE_4_) {
			__builtin_memcpy(h, ext, sizeof(*h));
			*srh_off = off;
			return srh_consistent(h, off, skb->len) ? SRH_FOUND : SRH_BAD;
		}
		/* A later fragment carries no headers of its own. */
		if (next == NEXTHDR_FRAGMENT && ipv6_later_fragment(ext))
			return SRH_NONE;
		off += ipv6_ext_len(next, ext);
		next = ext[0];
	}
	/* Looked through MAX_IPV6_EXT headers: was that the end of the chain? */
	return ipv6_is_ext(next) ? SRH_UNREADABLE : SRH_NONE;
}

#endif
