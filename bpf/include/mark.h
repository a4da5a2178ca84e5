/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The group in skb->mark. The low 16 bits carry the group mark (0 is the
 * unstamped group); the upper 16 bits belong to other host subsystems (the
 * PVE firewall uses bit 31) and are always preserved. VXLAN-GBP carries the
 * same 16 bits across nodes.
 */
#ifndef PVE_EBPF_MARK_H
#define PVE_EBPF_MARK_H

#include <linux/bpf.h>
#include <linux/types.h>

#define MS_GROUP_MASK 0xffffU

static __always_inline __u32 mark_group(__u32 mark)
{
	return mark & MS_GROUP_MASK;
}

/* `mark` with its low 16 bits replaced by `group`, the upper bits kept. */
static __always_inline __u32 mark_with_group(__u32 mark, __u32 group)
{
	return (mark & ~MS_GROUP_MASK) | (group & MS_GROUP_MASK);
}

/*
 * skb->mark read and written as one 32-bit access. When only one half of
 * it changes, clang narrows the access to 16 bits, which the verifier
 * refuses for the context; volatile keeps it whole.
 */
static __always_inline __u32 skb_mark(const struct __sk_buff *skb)
{
	return *(volatile const __u32 *)&skb->mark;
}

static __always_inline void skb_set_mark(struct __sk_buff *skb, __u32 mark)
{
	*(volatile __u32 *)&skb->mark = mark;
}

#endif
