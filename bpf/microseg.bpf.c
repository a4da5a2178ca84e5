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
 * Built without vmlinux.h: only UAPI headers are used.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

/*
 * TCX return codes. Debian 12's UAPI headers predate TCX (6.6), but the
 * values are the classic tc ones: TCX_NEXT == TC_ACT_UNSPEC,
 * TCX_PASS == TC_ACT_OK, TCX_DROP == TC_ACT_SHOT.
 */
#define MICROSEG_NEXT TC_ACT_UNSPEC
#define MICROSEG_DROP TC_ACT_SHOT

#define GROUP_MASK 0xffffU

#define VERDICT_DENY 0
#define VERDICT_ALLOW 1

#ifndef MICROSEG_TAP_MAX
#define MICROSEG_TAP_MAX 65536
#endif
#ifndef MICROSEG_RULES_MAX
#define MICROSEG_RULES_MAX (1 << 20)
#endif

/* Key of the rule map. Two u16s, no padding: user space writes the same bytes. */
struct rule_key {
	__u16 src;
	__u16 dst;
};

/* ifindex of an assigned local guest NIC -> its group mark (1..=65535). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MICROSEG_TAP_MAX);
	__type(key, __u32);
	__type(value, __u32);
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
	__type(value, __u8);
} rules SEC(".maps");

/* The group of the NIC the skb is on, or 0 when the NIC is not assigned. */
static __always_inline __u32 nic_group(const struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	__u32 *group = bpf_map_lookup_elem(&tap_to_group, &ifindex);

#ifdef MICROSEG_TEST_BROKEN
	/* Test object only: the dereference without a NULL check the verifier rejects. */
	return *group & GROUP_MASK;
#else
	/* The verifier insists on the NULL check before the dereference. */
	return group ? (*group & GROUP_MASK) : 0;
#endif
}

/*
 * A variant of the object for the code-swap test: the same behaviour with
 * different instructions, so its fingerprint differs but its maps do not.
 */
#ifdef MICROSEG_TEST_VARIANT
#define VARIANT_MARKER() asm volatile("r0 = 0" ::: "r0")
#else
#define VARIANT_MARKER() do { } while (0)
#endif

SEC("classifier/microseg_stamp")
int microseg_stamp(struct __sk_buff *skb)
{
	__u32 group, mark;

	VARIANT_MARKER();
	group = nic_group(skb);
	if (!group)
		return MICROSEG_NEXT;
	/* The upper 16 bits belong to other subsystems (the PVE firewall uses bit 31). */
	mark = (skb->mark & ~GROUP_MASK) | group;
	/*
	 * Verifier trick: writes to skb->mark must be 32 bits wide, but clang
	 * sees that only the low half changes and emits a 16-bit store. Making
	 * the value opaque forces the full-width store.
	 */
	asm volatile("" : "+r"(mark));
	skb->mark = mark;
	return MICROSEG_NEXT;
}

SEC("classifier/microseg_enforce")
int microseg_enforce(struct __sk_buff *skb)
{
	struct rule_key key;
	__u8 *verdict;
	__u32 dst;

	VARIANT_MARKER();
	dst = nic_group(skb);
	/* Not (or no longer) assigned: not ours to enforce. */
	if (!dst)
		return MICROSEG_NEXT;

	key.src = skb->mark & GROUP_MASK;
	key.dst = dst;
	verdict = bpf_map_lookup_elem(&rules, &key);
	/* Default deny: no entry drops just as an explicit deny does. */
	if (verdict && *verdict == VERDICT_ALLOW)
		return MICROSEG_NEXT;
	return MICROSEG_DROP;
}

char LICENSE[] SEC("license") = "GPL";
