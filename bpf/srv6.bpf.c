// SPDX-License-Identifier: GPL-2.0-only
/*
 * The SRv6 carrier (SPEC section 5): the group crosses nodes in the Tag
 * field of the segment routing header. On the underlay interfaces:
 *
 * - egress (srv6_send): into an SRv6 packet this node encapsulated (outer
 *   source one of its own addresses), write the low 16 bits of skb->mark,
 *   the group the guest's NIC stamped. SRv6 the node only forwards keeps
 *   its tag; nothing else is touched.
 * - ingress (srv6_receive): SRv6 from a non-peer is dropped (through up to
 *   four VLAN tags); from a peer, and addressed to this node, the low 16
 *   bits of skb->mark are set from the tag (the upper bits kept), so that
 *   the packet the seg6local route decapsulates is enforced as on the
 *   sending node. A peer's SRv6 for another node passes untouched.
 *
 * The guest's own mark never reaches the wire (it is scrubbed between
 * namespaces and replaced by the stamp), and the tag a guest writes into
 * SRv6 it builds itself is either overwritten here or, when the node only
 * forwards it, refused by the receiving node unless it comes from a peer's
 * address, which the stamp program never lets a guest claim.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "include/fib.h"
#include "include/mark.h"
#include "include/parse.h"
#include "include/srh.h"
#include "include/srv6.h"
#include "include/tcx.h"
#include "include/underlay.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct peer6_key);
	__type(value, struct peer_value);
} srv6_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	/* The kernel wants an array's key to be a plain 32-bit integer in BTF. */
	__type(key, __u32);
	__type(value, struct srv6_counters);
} srv6_stats SEC(".maps");

static __always_inline struct srv6_counters *counters(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&srv6_stats, &zero);
}

/* One more packet in counter `field` of this CPU; looked up only when a
 * packet is counted, not for every packet on the underlay. */
#define SRV6_COUNT(field)                                  \
	do {                                               \
		struct srv6_counters *c_ = counters();     \
		if (c_)                                    \
			c_->field += 1;                    \
	} while (0)

/*
 * Whether the node itself takes a packet to `addr` arriving on this
 * interface: a local address, or a route that ends here (the seg6local SID
 * routes are lightweight tunnels, which the FIB helper does not follow), or
 * the interface forwards no IPv6 at all (then whatever it accepts is for
 * the node). A packet the node would forward is not.
 */
static __always_inline int for_this_node(struct __sk_buff *skb, const struct in6_addr *addr)
{
	long rc = fib_lookup6(skb, skb->ifindex, addr);

	return rc == BPF_FIB_LKUP_RET_NOT_FWDED || rc == BPF_FIB_LKUP_RET_UNSUPP_LWT ||
	       rc == BPF_FIB_LKUP_RET_FWD_DISABLED;
}

#define NOT_IPV6 -1
#define TOO_MANY_TAGS -2

/* Offset of the IPv6 header behind up to MAX_VLAN_TAGS tags, NOT_IPV6 or TOO_MANY_TAGS. */
static __always_inline long ipv6_offset(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 off = 0;
	__be16 proto = skip_vlans(data, end, &off);

	if (proto == bpf_htons(ETH_P_IPV6))
		return off;
	return is_vlan_proto(proto) ? TOO_MANY_TAGS : NOT_IPV6;
}

SEC("classifier/srv6_receive")
int srv6_receive(struct __sk_buff *skb)
{
	struct srh_fixed h;
	struct ipv6hdr ip6;
	struct peer6_key key;
	__u32 srh_off = 0;
	enum srh_kind kind;
	long off;

	off = ipv6_offset(skb);
	/* More VLAN tags than are looked through: an SRH could hide behind them. */
	if (off == TOO_MANY_TAGS) {
		SRV6_COUNT(invalid);
		return MS_TCX_DROP;
	}
	if (off < 0)
		return MS_TCX_NEXT;
	/* Cut short inside the IPv6 header: not a packet the stack takes. */
	if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
		return MS_TCX_NEXT;
	kind = srh_find(skb, off, &h, &srh_off);
	if (kind == SRH_NONE)
		return MS_TCX_NEXT;
	__builtin_memcpy(key.addr, &ip6.saddr, sizeof(key.addr));
	if (!bpf_map_lookup_elem(&srv6_peers, &key)) {
		SRV6_COUNT(dropped);
		return MS_TCX_DROP;
	}
	/* A peer's packet whose header does not add up: its tag means nothing. */
	if (kind != SRH_FOUND) {
		SRV6_COUNT(invalid);
		return MS_TCX_DROP;
	}
	if (!for_this_node(skb, &ip6.daddr)) {
		SRV6_COUNT(transit);
		return MS_TCX_NEXT;
	}
	skb_set_mark(skb, mark_with_group(skb_mark(skb), bpf_ntohs(h.tag)));
	SRV6_COUNT(restored);
	return MS_TCX_NEXT;
}

SEC("classifier/srv6_send")
int srv6_send(struct __sk_buff *skb)
{
	struct srh_fixed h;
	struct ipv6hdr ip6;
	__u32 srh_off = 0;
	__be16 tag;
	long off;

	off = ipv6_offset(skb);
	if (off < 0)
		return MS_TCX_NEXT;
	if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
		return MS_TCX_NEXT;
	/* Only consistent headers: the node's seg6 routes never write others. */
	if (srh_find(skb, off, &h, &srh_off) != SRH_FOUND)
		return MS_TCX_NEXT;
	/* Encapsulated here (our own source address), not forwarded. */
	if (!for_this_node(skb, &ip6.saddr))
		return MS_TCX_NEXT;
	tag = bpf_htons(mark_group(skb_mark(skb)));
	/* The tag is covered by no checksum (and not by the SRH HMAC either). */
	if (bpf_skb_store_bytes(skb, srh_off + SRH_TAG_OFF, &tag, sizeof(tag), 0) < 0)
		return MS_TCX_NEXT;
	SRV6_COUNT(tagged);
	return MS_TCX_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
