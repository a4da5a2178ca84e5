// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test object of the test-only subsystem `orderprobe`: one program that must
 * run on a NIC's ingress before microseg_stamp. It counts the packets it
 * sees whose mark already carries a group: zero when it really runs first.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../include/mark.h"
#include "../include/tcx.h"

struct probe_counts {
	__u64 seen;
	__u64 stamped;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct probe_counts);
} probe_counts SEC(".maps");

SEC("classifier/order_probe")
int order_probe(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct probe_counts *c = bpf_map_lookup_elem(&probe_counts, &zero);

	if (c) {
		__sync_fetch_and_add(&c->seen, 1);
		if (mark_group(skb->mark))
			__sync_fetch_and_add(&c->stamped, 1);
	}
	return MS_TCX_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
