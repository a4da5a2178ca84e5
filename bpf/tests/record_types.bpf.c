// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test object: records that cross to user space outside a map's key or
 * value (the events ring buffer's records) have no BTF in the production
 * object. This object names them as map values, so that the layout test
 * compares their Rust mirrors with what clang laid out.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../include/events.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} event_record SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
