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
 * Built without vmlinux.h: only UAPI headers and bpf/include/.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "include/mark.h"
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
