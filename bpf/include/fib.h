/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Asking the node's routing table where an IPv6 packet would go. The FIB
 * helper answers NOT_FWDED for local addresses (and for link-local,
 * multicast and unroutable destinations), UNSUPP_LWT for routes into a
 * lightweight tunnel (the seg6local SID routes that decapsulate SRv6 among
 * them: it does not follow them), and FWD_DISABLED before any lookup when
 * the interface does not forward IPv6.
 */
#ifndef PVE_EBPF_FIB_H
#define PVE_EBPF_FIB_H

#include <linux/bpf.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>

#define AF_INET6_ 10

/* The FIB's answer for a packet to `addr` arriving on `ifindex`. */
static __always_inline long fib_lookup6(struct __sk_buff *skb, __u32 ifindex, const struct in6_addr *addr)
{
	struct bpf_fib_lookup fib = {};

	fib.family = AF_INET6_;
	fib.ifindex = ifindex;
	__builtin_memcpy(fib.ipv6_dst, addr, sizeof(fib.ipv6_dst));
	return bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
}

#endif
